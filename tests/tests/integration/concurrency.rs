use std::sync::Arc;
use std::time::Duration;

use integration_tests::{CountingEngine, TestApp};
use reqwest::Method;
use serde_json::json;

#[tokio::test]
async fn twenty_racing_commands_on_one_aggregate_leave_gapless_sequences_and_409_losers() {
    // Twenty follow-ups race for the conversation's next sequence. The engine is slow and
    // counts its calls: a loser must be refused before it reaches the engine, so the engine is
    // called once per question stored, never for a request answered 409.
    let engine = Arc::new(CountingEngine {
        delay: Duration::from_millis(300),
        ..Default::default()
    });
    let app = TestApp::builder().engine(engine.clone()).spawn().await;
    let admin = app.create_tenant("acme", "alice").await;
    let (conversation, _) = app.ask(&admin, "First question here").await;

    let requests = (0..20).map(|i| {
        let app = &app;
        let admin = &admin;
        let conversation = &conversation;
        async move {
            app.call(
                Method::POST,
                &format!("/v1/conversations/{conversation}/questions"),
                admin,
                Some(json!({"question": format!("follow-up number {i}")})),
            )
            .await
        }
    });
    let results = futures::future::join_all(requests).await;

    let winners = results.iter().filter(|(s, _)| *s == 200).count();
    let losers: Vec<_> = results.iter().filter(|(s, _)| *s == 409).collect();
    assert_eq!(winners + losers.len(), 20, "only 200 or 409: {results:?}");
    assert!(winners >= 1, "someone wins");
    assert!(!losers.is_empty(), "the race produced conflicts");
    for (_, body) in &losers {
        // Lost the race for the sequence, or came after the winner's question was stored
        // while its answer was still on the way.
        assert!(
            ["concurrent_modification", "question_pending"]
                .contains(&body["code"].as_str().unwrap()),
            "{body}"
        );
        assert_eq!(body["status"], 409);
    }
    // Each lost race for the sequence is counted (an answer's recording that lost one to a
    // later command would add to them: at most one per winner).
    let text = app.operator_get("/metrics").await.text().await.unwrap();
    let conflicts = integration_tests::metric_value(
        &text,
        "answers_event_store_conflicts_total",
        &[("aggregate", "conversation")],
    )
    .unwrap_or(0.0) as usize;
    let raced = losers
        .iter()
        .filter(|(_, body)| body["code"] == "concurrent_modification")
        .count();
    assert!(
        conflicts >= raced && conflicts <= raced + winners,
        "{conflicts} conflicts counted for {raced} lost races"
    );
    assert_eq!(
        engine.calls.load(std::sync::atomic::Ordering::SeqCst),
        1 + winners,
        "the engine answered the first question and each winner, no loser"
    );

    let sequences: Vec<i64> = sqlx::query_scalar(
        "SELECT sequence FROM events WHERE aggregate_type = 'conversation' ORDER BY sequence",
    )
    .fetch_all(&app.pool)
    .await
    .unwrap();
    let expected: Vec<i64> = (1..=(2 + 2 * winners as i64)).collect();
    assert_eq!(
        sequences, expected,
        "gapless: first question plus two events per winner"
    );
}
