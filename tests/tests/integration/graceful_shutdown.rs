//! A graceful stop (docs/deployment.md, "Graceful shutdown"): readiness fails first while
//! requests are still served for the drain, then the listener closes, requests in flight finish,
//! and the projections stop after their current event with their checkpoints consistent, so a
//! restart neither skips nor doubles anything.
use std::sync::Arc;
use std::time::{Duration, Instant};

use integration_tests::{read_model, wait_until_projected, SlowEngine, TestApp};
use serde_json::json;
use shutdown::Signal;

/// Asks a question and returns the status (0 when the request could not be sent at all).
async fn ask(client: &reqwest::Client, address: &str, token: &str, n: usize) -> u16 {
    client
        .post(format!("{address}/v1/conversations"))
        .bearer_auth(token)
        .json(&json!({"question": format!("How do I set up integration {n}?")}))
        .send()
        .await
        .map_or(0, |r| {
            if r.status() != 201 {
                eprintln!("question {n}: {r:?}");
            }
            r.status().as_u16()
        })
}

#[tokio::test]
async fn sigterm_drains_then_finishes_in_flight_requests_and_stops_projections_consistently() {
    let drain = Duration::from_millis(1500);
    let app = TestApp::builder()
        .embedded()
        // Each answer takes 700 ms: requests are in flight when the listener closes.
        .engine(Arc::new(SlowEngine(Duration::from_millis(700))))
        .configure(|s| {
            s.shutdown.drain_ms = drain.as_millis() as u64;
            s.shutdown.grace_ms = 10_000;
        })
        .spawn()
        .await;
    let token = app.create_tenant("acme", "alice").await;
    for n in 0..3 {
        assert_eq!(ask(&app.client, &app.address, &token, n).await, 201);
    }
    let settings = app.settings.clone();
    let address = app.address.clone();

    // One request in flight when the stop comes.
    let before_stop = tokio::spawn({
        let (client, address, token) = (app.client.clone(), address.clone(), token.clone());
        async move { ask(&client, &address, &token, 10).await }
    });
    tokio::time::sleep(Duration::from_millis(100)).await;
    let stop_at = Instant::now();
    app.signal(Signal::Terminate);

    // Readiness fails at once (liveness does not), and the service still answers meanwhile.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let ready = app
        .client
        .get(format!("{address}/health/ready"))
        .send()
        .await
        .unwrap();
    assert_eq!(ready.status(), 503);
    let problem: serde_json::Value = ready.json().await.unwrap();
    assert!(
        problem["detail"].as_str().unwrap().contains("draining"),
        "{problem}"
    );
    let live = app
        .client
        .get(format!("{address}/health/live"))
        .send()
        .await
        .unwrap();
    assert_eq!(live.status(), 200);
    let during_drain = ask(&app.client, &address, &token, 11).await;
    assert!(stop_at.elapsed() < drain, "the drain lasted too little");
    assert_eq!(during_drain, 201, "requests are served during the drain");

    // Sent just before the listener closes: finishes after it.
    let until_close = drain.saturating_sub(stop_at.elapsed() + Duration::from_millis(200));
    tokio::time::sleep(until_close).await;
    let at_close = tokio::spawn({
        let (client, address, token) = (app.client.clone(), address.clone(), token.clone());
        async move { ask(&client, &address, &token, 12).await }
    });
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert!(stop_at.elapsed() > drain);
    // After the drain, nothing new is admitted: refused with `shutting_down` (and the
    // connection closed) while the last requests finish, then no listener at all.
    let fresh = reqwest::Client::new();
    match fresh
        .post(format!("{address}/v1/conversations"))
        .bearer_auth(&token)
        .json(&json!({"question": "Too late for this instance?"}))
        .timeout(Duration::from_secs(2))
        .send()
        .await
    {
        Err(refused) => assert!(refused.is_connect(), "{refused:?}"),
        Ok(response) => {
            assert_eq!(response.status(), 503);
            assert_eq!(response.headers()["connection"], "close");
            assert_eq!(response.headers()["retry-after"], "1");
            let problem: serde_json::Value = response.json().await.unwrap();
            assert_eq!(problem["code"], "shutting_down");
        }
    }
    assert_eq!(before_stop.await.unwrap(), 201, "in flight at the stop");
    assert_eq!(at_close.await.unwrap(), 201, "in flight at the close");
    app.stopped().await.expect("a clean stop");
    let took = stop_at.elapsed();
    assert!(
        took >= drain && took < drain + Duration::from_secs(8),
        "stopped after {took:?}"
    );

    // The checkpoints match what was applied: a restart catches up without doubling anything
    // (wait_until_projected fails on an event applied twice) and the model equals a rebuild.
    let restarted = TestApp::builder()
        .embedded()
        .configure(|s| *s = settings)
        .spawn()
        .await;
    wait_until_projected(&restarted.pool, Duration::from_secs(30)).await;
    let live_model = read_model(&restarted.pool).await;
    assert_eq!(
        live_model.len(),
        6,
        "six conversations, none lost, the refused one not stored"
    );
    projections::rebuild(
        &restarted.pool,
        &projections::Folded(projections::conversations::Conversations),
    )
    .await
    .unwrap();
    assert_eq!(read_model(&restarted.pool).await, live_model);
}

#[tokio::test]
async fn sigint_skips_the_drain_and_a_stopping_kafka_service_lets_its_locks_go() {
    let app = TestApp::builder()
        .streaming()
        .configure(|s| {
            s.shutdown.drain_ms = 30_000;
            s.shutdown.grace_ms = 10_000;
        })
        .spawn()
        .await;
    let token = app.create_tenant("acme", "alice").await;
    for n in 0..5 {
        assert_eq!(ask(&app.client, &app.address, &token, n).await, 201);
    }
    wait_until_projected(&app.pool, Duration::from_secs(60)).await;
    let url = secrecy::ExposeSecret::expose_secret(&app.settings.database.url).to_string();
    let observer = sqlx::PgPool::connect(&url).await.unwrap();
    let database: String = sqlx::query_scalar("SELECT current_database()")
        .fetch_one(&observer)
        .await
        .unwrap();
    let advisory = || async {
        sqlx::query_scalar::<_, i64>(
            "SELECT count(*) FROM pg_locks l JOIN pg_database d ON d.oid = l.database
              WHERE l.locktype = 'advisory' AND l.granted AND d.datname = $1",
        )
        .bind(&database)
        .fetch_one(&observer)
        .await
        .unwrap()
    };
    assert!(
        advisory().await >= 2,
        "the relay's lock and the projections' partitions are held"
    );

    let stop_at = Instant::now();
    app.signal(Signal::Interrupt);
    app.stopped().await.expect("a clean stop");
    assert!(
        stop_at.elapsed() < Duration::from_secs(10),
        "SIGINT does not wait for the 30 s drain: {:?}",
        stop_at.elapsed()
    );
    assert_eq!(
        advisory().await,
        0,
        "every lock and partition is let go with the stop"
    );
    assert_eq!(
        integration_tests::applied_conversation_events(&observer).await,
        integration_tests::stored_conversation_events(&observer).await
    );
    observer.close().await;
}
