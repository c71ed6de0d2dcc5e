//! The backup and restore drill (issue 15, docs/disaster-recovery.md), with the real scripts
//! and the real binary: a seeded platform is backed up (scripts/backup.sh), restored into a new
//! database (scripts/restore.sh), its events verified tenant by tenant, every projection
//! rebuilt from the restored store (`answers rebuild`), and every read route answers as the
//! original did.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::Value;
use sqlx::PgPool;
use support::*;

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap()
}

fn run(command: &mut Command) {
    let out = command.output().unwrap();
    assert!(
        out.status.success(),
        "{command:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Every projection has applied every event of its types.
async fn caught_up(pool: &PgPool) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let mut lag = 0;
        for projection in projections::all() {
            lag += projections::ProjectionStatus::load(pool, projection.as_ref())
                .await
                .unwrap()
                .lag_events;
        }
        if lag == 0 {
            return;
        }
        assert!(Instant::now() < deadline, "{lag} events not projected");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Per tenant: the number of events and a digest of them in commit order.
async fn digests(pool: &PgPool) -> Vec<(String, i64, String)> {
    sqlx::query_as(
        "SELECT tenant_id, count(*), md5(string_agg(event_id::text || event_type || payload::text
                 || metadata::text, ',' ORDER BY transaction_id, position))
           FROM events GROUP BY tenant_id ORDER BY tenant_id",
    )
    .fetch_all(pool)
    .await
    .unwrap()
}

/// What each tenant's admin reads, route by route.
async fn read_everything(
    service: &Service,
    client: &reqwest::Client,
    tokens: &[(String, String)],
) -> Vec<(String, u16, Value)> {
    let mut answers = Vec::new();
    let get = |path: String, token: String| {
        let (client, address) = (client.clone(), service.address());
        async move {
            let r = client
                .get(format!("{address}{path}"))
                .bearer_auth(&token)
                .send()
                .await
                .unwrap();
            let status = r.status().as_u16();
            let body = r.json::<Value>().await.unwrap_or(Value::Null);
            (path, status, body)
        }
    };
    // A fixed window (the relative ones end at the current minute): the 30 days to tomorrow.
    let day = 86_400;
    let today = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        / day
        * day;
    let stamp = |secs: u64| {
        let out = Command::new("date")
            .args(["-u", "-d", &format!("@{secs}"), "+%Y-%m-%dT%H:%M:%SZ"])
            .output()
            .unwrap();
        String::from_utf8(out.stdout).unwrap().trim().to_string()
    };
    let window = format!("from={}&to={}", stamp(today - 30 * day), stamp(today + day));
    for (tenant, token) in tokens {
        let mut paths = vec![
            "/v1/tenant".to_string(),
            "/v1/conversations?limit=100".to_string(),
            "/v1/sources".to_string(),
            format!("/v1/analytics?{window}&bucket=week"),
            format!("/v1/analytics/cost?{window}"),
            format!("/v1/audit/events?{window}"),
            "/v1/audit?limit=100".to_string(),
        ];
        let (_, _, listed) = get(paths[1].clone(), token.clone()).await;
        for item in listed["items"].as_array().into_iter().flatten().take(5) {
            paths.push(format!(
                "/v1/conversations/{}",
                item["id"].as_str().unwrap()
            ));
        }
        for path in paths {
            let (path, status, body) = get(path, token.clone()).await;
            assert_eq!(status, 200, "{tenant} {path}: {body}");
            answers.push((format!("{tenant} {path}"), status, body));
        }
    }
    answers
}

/// Where two answers differ, as JSON paths.
fn differ(path: &str, was: &Value, is: &Value, out: &mut Vec<String>) {
    match (was, is) {
        (Value::Object(a), Value::Object(b)) => {
            for key in a.keys().chain(b.keys().filter(|k| !a.contains_key(*k))) {
                let (x, y) = (&a.get(key), &b.get(key));
                match (x, y) {
                    (Some(x), Some(y)) => differ(&format!("{path}.{key}"), x, y, out),
                    _ => out.push(format!("{path}.{key}: {x:?} / {y:?}")),
                }
            }
        }
        (Value::Array(a), Value::Array(b)) if a.len() == b.len() => {
            for (i, (x, y)) in a.iter().zip(b).enumerate() {
                differ(&format!("{path}[{i}]"), x, y, out);
            }
        }
        _ if was != is => out.push(format!("{path}: {was} / {is}")),
        _ => {}
    }
}

#[tokio::test]
async fn a_backup_restored_into_a_new_database_and_rebuilt_answers_every_read_route_alike() {
    let (db, service, client, _) = set_up(Transport::Embedded);
    run(service.command().args([
        "seed",
        "--tenants",
        "2",
        "--days",
        "3",
        "--questions",
        "120",
    ]));
    // The quality check records breaches on its own schedule (a tenant event): off, so that
    // nothing but the drill changes the store between the two readings.
    let quiet = [("APP__QUALITY__IN_PROCESS", "false")];
    let mut original = service.start_with(&[], &quiet);
    service.ready(&client).await;
    let url = format!("{}/{db}", server_url());
    let pool = PgPool::connect(&url).await.unwrap();
    caught_up(&pool).await;
    let tokens: Vec<(String, String)> = ["demo-1", "demo-2"]
        .iter()
        .map(|t| (t.to_string(), service.token_for(t, "admin", "admin")))
        .collect();
    let before = read_everything(&service, &client, &tokens).await;
    original.terminate();
    assert!(original.exited(Duration::from_secs(30)).await.is_some());

    let dir = std::env::temp_dir().join(format!("answers-drill-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let backup = dir.join("answers.dump");
    run(Command::new(repo().join("scripts/backup.sh"))
        .arg(&url)
        .arg(&backup));
    let restored_db = format!("{db}_restored");
    let restored_url = format!("{}/{restored_db}", server_url());
    run(Command::new(repo().join("scripts/restore.sh"))
        .arg(&backup)
        .arg(&restored_url));
    // Restoring over an existing database is refused.
    let again = Command::new(repo().join("scripts/restore.sh"))
        .arg(&backup)
        .arg(&restored_url)
        .output()
        .unwrap();
    assert!(!again.status.success(), "a restore over a database");

    let restored = PgPool::connect(&restored_url).await.unwrap();
    assert_eq!(
        digests(&restored).await,
        digests(&pool).await,
        "every tenant's events, in order"
    );
    // Every projection rebuilt from the restored store alone.
    for projection in projections::all() {
        run(service
            .command()
            .env("APP__DATABASE__URL", &restored_url)
            .args(["rebuild", projection.name()]));
    }
    let on_restored = Service::new(&restored_db, Transport::Embedded);
    let mut serving = on_restored.start_with(&[], &quiet);
    on_restored.ready(&client).await;
    caught_up(&restored).await;
    let after = read_everything(&on_restored, &client, &tokens).await;
    serving.kill();
    assert_eq!(before.len(), after.len());
    let mut differences = Vec::new();
    for ((route, _, was), (_, _, is)) in before.iter().zip(&after) {
        differ(route, was, is, &mut differences);
    }
    assert!(
        differences.is_empty(),
        "answers that differ after the restore:\n{}",
        differences.join("\n")
    );
    pool.close().await;
    restored.close().await;
    drop_database(&db).await;
    drop_database(&restored_db).await;
    std::fs::remove_dir_all(dir).ok();
}
