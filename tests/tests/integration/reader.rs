use std::collections::{BTreeMap, HashSet};
use std::time::Duration;

use event_store::{Checkpoint, EventReader};
use futures::StreamExt;
use integration_tests::TestApp;
use rand::Rng;
use sqlx::PgPool;

const WRITERS: usize = 8;
const PER_WRITER: usize = 60;

/// Appends one event in its own transaction and waits a random while before committing, so
/// that positions commit out of order.
async fn append(pool: &PgPool, writer: usize, n: usize) {
    let delay = rand::thread_rng().gen_range(0..40);
    let mut tx = pool.begin().await.unwrap();
    sqlx::query(
        "INSERT INTO events (aggregate_type, aggregate_id, sequence, event_type, event_version, \
           payload, metadata, event_id, tenant_id, actor_id, actor_role, correlation_id) \
         VALUES ('test', $1, $2, 'Tested', '1.0', '{}'::jsonb, '{}'::jsonb, gen_random_uuid(), \
           'acme', 'writer', 'admin', 'c')",
    )
    .bind(format!("acme/writer-{writer}"))
    .bind(n as i64 + 1)
    .execute(&mut *tx)
    .await
    .unwrap();
    tokio::time::sleep(Duration::from_millis(delay)).await;
    tx.commit().await.unwrap();
}

#[tokio::test]
async fn the_reader_sees_every_commit_once_despite_out_of_order_commits() {
    let app = TestApp::spawn().await;
    let reader = EventReader::new(app.pool.clone());
    let total = WRITERS * PER_WRITER;

    let consumer = tokio::spawn(
        reader
            .stream(Checkpoint::START, 50, Duration::from_millis(5))
            .take(total)
            .collect::<Vec<_>>(),
    );
    let writers: Vec<_> = (0..WRITERS)
        .map(|w| {
            let pool = app.pool.clone();
            tokio::spawn(async move {
                for n in 0..PER_WRITER {
                    append(&pool, w, n).await;
                }
            })
        })
        .collect();
    for w in writers {
        w.await.unwrap();
    }
    let events = tokio::time::timeout(Duration::from_secs(60), consumer)
        .await
        .expect("the reader catches up")
        .unwrap();

    let events: Vec<_> = events.into_iter().map(Result::unwrap).collect();
    assert_eq!(events.len(), total);
    let ids: HashSet<_> = events.iter().map(|e| e.event_id).collect();
    let listing: Vec<String> = events
        .iter()
        .map(|e| {
            format!(
                "{}/{} {}#{}",
                e.transaction_id, e.position, e.aggregate_id, e.sequence
            )
        })
        .collect();
    assert_eq!(ids.len(), total, "nothing twice: {listing:?}");
    let stored: i64 = sqlx::query_scalar("SELECT count(*) FROM events")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(stored as usize, total, "nothing skipped");
    // Each aggregate's events arrive in sequence order, and checkpoints only move forward.
    let mut last: BTreeMap<&str, i64> = BTreeMap::new();
    for pair in events.windows(2) {
        assert!(pair[0].checkpoint() < pair[1].checkpoint());
    }
    for e in &events {
        let previous = last.insert(&e.aggregate_id, e.sequence).unwrap_or(0);
        assert_eq!(e.sequence, previous + 1, "{}", e.aggregate_id);
    }
    // Nothing more arrives after the last one: a re-read from the final checkpoint is empty.
    let rest = reader
        .read_batch(events.last().unwrap().checkpoint(), 10)
        .await
        .unwrap();
    assert!(rest.is_empty());
}

#[tokio::test]
async fn an_open_transaction_holds_the_reader_back_until_it_commits() {
    let app = TestApp::spawn().await;
    let reader = EventReader::new(app.pool.clone());
    // A transaction that began first and is still open...
    let mut slow = app.pool.begin().await.unwrap();
    sqlx::query("SELECT pg_current_xact_id()")
        .execute(&mut *slow)
        .await
        .unwrap();
    // ...and a later one that commits at once.
    append(&app.pool, 1, 0).await;
    assert!(
        reader
            .read_batch(Checkpoint::START, 10)
            .await
            .unwrap()
            .is_empty(),
        "a later commit is not visible while an older transaction may still write before it"
    );
    sqlx::query(
        "INSERT INTO events (aggregate_type, aggregate_id, sequence, event_type, event_version, \
           payload, metadata, event_id, tenant_id, actor_id, actor_role, correlation_id) \
         VALUES ('test', 'acme/slow', 1, 'Tested', '1.0', '{}', '{}', gen_random_uuid(), 'acme', 'w', 'admin', 'c')",
    )
    .execute(&mut *slow)
    .await
    .unwrap();
    slow.commit().await.unwrap();
    // Transactions of other databases on the same server also hold the horizon back for a
    // moment, so wait (bounded) instead of expecting both at once.
    let all: Vec<_> = tokio::time::timeout(
        Duration::from_secs(30),
        reader
            .stream(Checkpoint::START, 10, Duration::from_millis(5))
            .take(2)
            .collect::<Vec<_>>(),
    )
    .await
    .expect("both events become visible")
    .into_iter()
    .map(Result::unwrap)
    .collect();
    let ids: Vec<&str> = all.iter().map(|e| e.aggregate_id.as_str()).collect();
    assert_eq!(
        ids,
        ["acme/slow", "acme/writer-1"],
        "commit-safe order: the older transaction first"
    );
}
