//! A projection fed from the event store itself, with no broker: the runtime does not depend on
//! Kafka, and the store in commit-safe order is an event source like any other.
use std::sync::Arc;
use std::time::Duration;

use domain::AggregateType;
use event_store::Checkpoint;
use integration_tests::{read_model, wait_until_projected, TestApp};
use projections::conversations::Conversations;
use projections::{Folded, ProjectionRunner, StoreFollower};

#[tokio::test]
async fn a_projection_follows_the_store_without_a_broker() {
    // No broker in this app: `kafka.enabled` is off, nothing is published anywhere.
    let app = TestApp::spawn().await;
    let admin = app.create_tenant("acme", "alice").await;
    app.ask(&admin, "First question, before the runner starts")
        .await;
    let source = StoreFollower::new(
        app.pool.clone(),
        &[AggregateType::Conversation],
        100,
        Checkpoint::START,
        Duration::from_millis(20),
    );
    let runner = ProjectionRunner::new(app.pool.clone(), Arc::new(Folded(Conversations)), source);
    let task = tokio::spawn(runner.run_supervised());
    // Written while the runner follows.
    app.ask(&admin, "Second question, while it runs").await;
    app.ask(&admin, "Third question, while it runs").await;
    wait_until_projected(&app.pool, Duration::from_secs(30)).await;
    task.abort();
    let rows = read_model(&app.pool).await;
    assert_eq!(rows.len(), 3, "every conversation reached the read model");
    assert!(rows.iter().all(|r| r["version"] == 2), "{rows:?}");
}

/// After a failed run the follower resumes after the last acknowledged event: nothing is lost,
/// nothing applied twice, and the result equals a rebuild from 0.
#[tokio::test]
async fn a_follower_resumes_after_a_failed_run_without_losing_or_repeating_events() {
    let app = TestApp::spawn().await;
    let admin = app.create_tenant("acme", "alice").await;
    for i in 0..5 {
        app.ask(&admin, &format!("Question {i}")).await;
    }
    let source = StoreFollower::new(
        app.pool.clone(),
        &[AggregateType::Conversation],
        4,
        Checkpoint::START,
        Duration::from_millis(20),
    );
    let failing = Arc::new(integration_tests::HookedConversations(
        integration_tests::fail_once_after(3),
    ));
    let task =
        tokio::spawn(ProjectionRunner::new(app.pool.clone(), failing, source).run_supervised());
    wait_until_projected(&app.pool, Duration::from_secs(30)).await;
    task.abort();
    let live = read_model(&app.pool).await;
    assert_eq!(live.len(), 5);
    projections::rebuild(&app.pool, &Folded(Conversations))
        .await
        .unwrap();
    assert_eq!(
        read_model(&app.pool).await,
        live,
        "live equals a rebuild from 0"
    );
}
