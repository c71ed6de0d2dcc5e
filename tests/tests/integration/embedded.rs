//! The embedded transport (docs/streaming.md): projections follow the event store in the
//! service's own process, no broker, no relay, each keeping its checkpoint in its status row in
//! the transaction that applies the event.
use std::sync::Arc;
use std::time::Duration;

use integration_tests::{
    applied_conversation_events, read_model, stored_conversation_events, wait_for,
    wait_until_projected, TestApp,
};
use projections::conversations::Conversations;
use projections::{Folded, Projection, ProjectionRunner, StoreFollower};
use reqwest::Method;
use serde_json::json;

/// The conversations projection and its embedded-transport follower, `batch` events a read.
fn conversations_follower(pool: &sqlx::PgPool, batch: i64) -> (Arc<dyn Projection>, StoreFollower) {
    let projection: Arc<dyn Projection> = Arc::new(Folded(Conversations));
    let source = StoreFollower::for_projection(
        pool.clone(),
        projection.as_ref(),
        batch,
        Duration::from_millis(5),
    );
    (projection, source)
}

#[tokio::test]
async fn every_read_model_follows_the_commands_without_a_broker() {
    let app = TestApp::builder().embedded().spawn().await;
    assert!(!app.settings.kafka.enabled);
    let admin = app.create_tenant("acme", "alice").await;
    let mut asked = Vec::new();
    for i in 0..5 {
        asked.push(app.ask(&admin, &format!("Embedded question {i}")).await);
    }
    let (status, _) = app
        .call(
            Method::POST,
            "/v1/sources",
            &admin,
            Some(json!({"kind": "docs", "name": "Docs", "location": "https://docs.test"})),
        )
        .await;
    assert_eq!(status, 201);
    wait_until_projected(&app.pool, Duration::from_secs(30)).await;
    assert_eq!(read_model(&app.pool).await.len(), 5);
    // Every projection catches up with the store: nothing is behind in the details.
    let details = wait_for(
        "every projection caught up",
        Duration::from_secs(30),
        || async {
            let details: serde_json::Value = app
                .operator_get("/health/details")
                .await
                .json()
                .await
                .unwrap();
            details["projections"]
                .as_array()
                .unwrap()
                .iter()
                .all(|p| p["lag_events"] == 0)
                .then_some(details)
        },
    )
    .await;
    assert_eq!(
        details["relay"],
        serde_json::Value::Null,
        "no relay: {details}"
    );
    // Read through the API, from the read models.
    let (status, list) = app
        .call(Method::GET, "/v1/conversations", &admin, None)
        .await;
    assert_eq!(status, 200);
    assert_eq!(list["items"].as_array().map(Vec::len), Some(5), "{list}");
    let (status, sources) = app.call(Method::GET, "/v1/sources", &admin, None).await;
    assert_eq!(status, 200, "{sources}");
    // Each follower's checkpoint is the last event of its aggregate types.
    let (checkpoint, last): (Option<i64>, Option<i64>) = sqlx::query_as(
        "SELECT (SELECT store_position FROM projection_status WHERE projection = 'conversations'),
                (SELECT max(position) FROM events)",
    )
    .fetch_one(&app.pool)
    .await
    .unwrap();
    assert!(
        checkpoint.is_some() && checkpoint <= last,
        "{checkpoint:?} {last:?}"
    );
}

#[tokio::test]
async fn a_follower_killed_again_and_again_resumes_from_its_checkpoint_and_applies_each_event_once()
{
    // The service stores commands only; this test runs the conversations projection itself
    // and kills it (the task, at any await) while writers go on.
    let app = TestApp::spawn().await;
    let admin = app.create_tenant("acme", "alice").await;
    let follower = || {
        let (projection, source) = conversations_follower(&app.pool, 7);
        tokio::spawn(ProjectionRunner::new(app.pool.clone(), projection, source).run_supervised())
    };
    for round in 0..6 {
        let task = follower();
        for i in 0..4 {
            app.ask(&admin, &format!("Round {round}, question {i}"))
                .await;
        }
        tokio::time::sleep(Duration::from_millis(15 * round)).await;
        task.abort();
        let _ = task.await;
        // Never more applied than stored, whenever it died.
        assert!(
            applied_conversation_events(&app.pool).await
                <= stored_conversation_events(&app.pool).await
        );
    }
    // The first conversation's row is taken away: a follower that started over from the
    // store's beginning would write it again; one that resumes from its checkpoint does not.
    let task = follower();
    wait_until_projected(&app.pool, Duration::from_secs(30)).await;
    task.abort();
    let _ = task.await;
    let first: uuid::Uuid = sqlx::query_scalar(
        "SELECT conversation_id FROM rm_conversations ORDER BY created_at LIMIT 1",
    )
    .fetch_one(&app.pool)
    .await
    .unwrap();
    sqlx::query("DELETE FROM rm_conversations WHERE conversation_id = $1")
        .bind(first)
        .execute(&app.pool)
        .await
        .unwrap();
    let task = follower();
    app.ask(&admin, "After the last restart").await;
    wait_until_projected(&app.pool, Duration::from_secs(30)).await;
    task.abort();
    let rows = read_model(&app.pool).await;
    assert_eq!(
        rows.len(),
        6 * 4,
        "the taken row stays away, the new one arrived"
    );
    assert!(rows.iter().all(|r| r["version"] == 2), "{rows:?}");
    assert_eq!(
        applied_conversation_events(&app.pool).await,
        stored_conversation_events(&app.pool).await,
        "every event applied exactly once"
    );
}

#[tokio::test]
async fn switching_from_embedded_to_kafka_and_back_loses_nothing_and_applies_nothing_twice() {
    let embedded = TestApp::builder().embedded().spawn().await;
    let admin = embedded.create_tenant("acme", "alice").await;
    for i in 0..3 {
        embedded
            .ask(&admin, &format!("Asked on the embedded transport {i}"))
            .await;
    }
    wait_until_projected(&embedded.pool, Duration::from_secs(30)).await;
    embedded.stop().await;

    // The same database behind Kafka: the relay publishes the store from its start, the
    // consumers skip what the embedded followers applied, then apply what is new.
    let kafka = embedded
        .builder_on_same_database()
        .streaming()
        .spawn()
        .await;
    for i in 0..3 {
        kafka.ask(&admin, &format!("Asked over Kafka {i}")).await;
    }
    wait_until_projected(&kafka.pool, Duration::from_secs(60)).await;
    kafka.stop().await;

    // And back: the followers resume from their checkpoints and skip what Kafka applied.
    let again = kafka.builder_on_same_database().embedded().spawn().await;
    again
        .ask(&admin, "Asked on the embedded transport again")
        .await;
    wait_until_projected(&again.pool, Duration::from_secs(30)).await;
    let rows = read_model(&again.pool).await;
    assert_eq!(rows.len(), 7, "every conversation in the read model");
    assert!(rows.iter().all(|r| r["version"] == 2), "{rows:?}");
    assert_eq!(
        applied_conversation_events(&again.pool).await,
        stored_conversation_events(&again.pool).await,
        "each event applied once across the three runs"
    );
}

#[tokio::test]
async fn eight_racing_writers_reach_the_read_model_once_each_on_the_embedded_transport() {
    let app = TestApp::builder().embedded().spawn().await;
    let admin = app.create_tenant("acme", "alice").await;
    let writers = (0..8).map(|w| {
        let app = &app;
        let admin = &admin;
        async move {
            for i in 0..10 {
                app.ask(admin, &format!("Writer {w}, question {i}")).await;
            }
        }
    });
    futures::future::join_all(writers).await;
    wait_until_projected(&app.pool, Duration::from_secs(60)).await;
    let rows = read_model(&app.pool).await;
    assert_eq!(rows.len(), 80);
    assert!(rows.iter().all(|r| r["version"] == 2), "{rows:?}");
}

/// Delivers the store's conversation events; on its first run it goes quiet after `quiet_after`
/// of them, as a consumer whose group session silently broke would.
struct GoesQuiet {
    inner: StoreFollower,
    quiet_after: usize,
    delivered: usize,
    runs: usize,
}

#[async_trait::async_trait]
impl projections::EventSource for GoesQuiet {
    async fn open(&mut self) -> Result<(), projections::SourceError> {
        self.runs += 1;
        self.delivered = 0;
        self.inner.open().await
    }
    async fn next(&mut self) -> Result<projections::Delivery, projections::SourceError> {
        if self.runs == 1 && self.delivered >= self.quiet_after {
            std::future::pending::<()>().await;
        }
        self.delivered += 1;
        self.inner.next().await
    }
    async fn ack(&mut self, d: &projections::Delivery) -> Result<(), projections::SourceError> {
        self.inner.ack(d).await
    }
    async fn close(&mut self) {
        self.inner.close().await
    }
    async fn checkpoint_in(
        &self,
        conn: &mut sqlx::PgConnection,
        d: &projections::Delivery,
    ) -> Result<(), projections::SourceError> {
        self.inner.checkpoint_in(conn, d).await
    }
}

#[tokio::test]
async fn a_stalled_consumer_is_detected_counted_and_recreated_without_a_person() {
    let app = TestApp::spawn().await;
    let admin = app.create_tenant("acme", "alice").await;
    for i in 0..3 {
        app.ask(&admin, &format!("Waiting question {i}")).await;
    }
    let (projection, inner) = conversations_follower(&app.pool, 100);
    let source = GoesQuiet {
        inner,
        quiet_after: 2,
        delivered: 0,
        runs: 0,
    };
    let runner = ProjectionRunner::new(app.pool.clone(), projection, source)
        .with_stall_detection(Duration::from_millis(300));
    let task = tokio::spawn(runner.run_supervised());
    wait_until_projected(&app.pool, Duration::from_secs(30)).await;
    task.abort();
    let (recoveries, at): (i64, Option<chrono::DateTime<chrono::Utc>>) = sqlx::query_as(
        "SELECT stall_recoveries, last_stall_at FROM projection_status WHERE projection = 'conversations'",
    )
    .fetch_one(&app.pool)
    .await
    .unwrap();
    assert_eq!(recoveries, 1, "one stall, one recovery");
    assert!(at.is_some());
    // Operators see it in the details and the metrics.
    let details: serde_json::Value = app
        .operator_get("/health/details")
        .await
        .json()
        .await
        .unwrap();
    let conversations = details["projections"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "conversations")
        .unwrap()
        .clone();
    assert_eq!(conversations["stall_recoveries"], 1, "{conversations}");
    let metrics = app.operator_get("/metrics").await.text().await.unwrap();
    assert_eq!(
        integration_tests::metric_value(
            &metrics,
            "answers_projection_stall_recoveries",
            &[("projection", "conversations")]
        ),
        Some(1.0),
        "{metrics}"
    );
    // A caught-up projection that hears nothing is not stalled.
    let (projection, source) = conversations_follower(&app.pool, 100);
    let quiet = tokio::spawn(
        ProjectionRunner::new(app.pool.clone(), projection, source)
            .with_stall_detection(Duration::from_millis(100))
            .run_supervised(),
    );
    tokio::time::sleep(Duration::from_millis(600)).await;
    quiet.abort();
    let recoveries: i64 = sqlx::query_scalar(
        "SELECT stall_recoveries FROM projection_status WHERE projection = 'conversations'",
    )
    .fetch_one(&app.pool)
    .await
    .unwrap();
    assert_eq!(recoveries, 1);
}
