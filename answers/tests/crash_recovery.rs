//! The whole service killed with SIGKILL under load, again and again, then started once more:
//! with no one touching anything, every read model converges with the store, no accepted
//! command is missing, nothing is applied twice and no question is left pending (issue 12,
//! docs/projections.md). The real binary, a real process kill, on each transport.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use sqlx::PgPool;
use support::*;

#[tokio::test]
async fn killed_with_sigkill_under_load_it_converges_by_itself_on_the_embedded_transport() {
    killed_with_sigkill_under_load_it_converges_by_itself(Transport::Embedded).await;
}

#[tokio::test]
async fn killed_with_sigkill_under_load_it_converges_by_itself_on_kafka() {
    killed_with_sigkill_under_load_it_converges_by_itself(Transport::Kafka).await;
}

async fn killed_with_sigkill_under_load_it_converges_by_itself(transport: Transport) {
    let (db, service, client, token) = set_up(transport);

    let mut child = service.start();
    service.ready(&client).await;
    service.create_tenant(&client, &token).await;

    // Eight clients asking all along; the ids of the questions the service accepted.
    let accepted: Arc<Mutex<Vec<String>>> = Arc::default();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let load: Vec<_> = (0..8)
        .map(|c| {
            let (client, token, address) = (client.clone(), token.clone(), service.address());
            let (accepted, stop) = (accepted.clone(), stop.clone());
            tokio::spawn(async move {
                let mut n = 0;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    n += 1;
                    let question = format!("Client {c}, question {n}");
                    let sent = send_question(&client, &address, &token, question).await;
                    match sent {
                        Ok(r) if r.status() == 201 => {
                            let body: serde_json::Value = r.json().await.unwrap_or_default();
                            if let Some(id) = body["id"].as_str() {
                                accepted.lock().unwrap().push(id.to_string());
                            }
                        }
                        // Refused connections and cut requests while the service is down.
                        _ => tokio::time::sleep(Duration::from_millis(20)).await,
                    }
                }
            })
        })
        .collect();

    for round in 0..3 {
        tokio::time::sleep(Duration::from_millis(1200 + 300 * round)).await;
        child.kill();
        child = service.start();
        service.ready(&client).await;
    }
    tokio::time::sleep(Duration::from_millis(1000)).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for task in load {
        task.await.unwrap();
    }
    let last_start = Instant::now();
    let accepted = accepted.lock().unwrap().clone();
    assert!(
        accepted.len() > 20,
        "the load ran: {} accepted",
        accepted.len()
    );

    let pool = PgPool::connect(&format!("{}/{db}", server_url()))
        .await
        .unwrap();
    // Every accepted question is in the store.
    let stored: Vec<String> = sqlx::query_scalar(
        "SELECT DISTINCT split_part(aggregate_id, '/', 2) FROM events
          WHERE event_type = 'QuestionAsked'",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    let missing: Vec<&String> = accepted.iter().filter(|id| !stored.contains(id)).collect();
    assert!(missing.is_empty(), "accepted but not stored: {missing:?}");

    // Converges within 60 s of the last start, with nothing done by hand.
    let converged = loop {
        let Progress {
            asked,
            settled,
            conversation_events,
            applied,
        } = progress(&pool).await;
        let rows = scalar(&pool, "SELECT count(*) FROM rm_conversations").await;
        let conversations = scalar(
            &pool,
            "SELECT count(DISTINCT aggregate_id) FROM events WHERE aggregate_type = 'conversation'",
        )
        .await;
        let lagging = scalar(
            &pool,
            "SELECT count(*) FROM projection_status p
              WHERE p.applied_events < (SELECT count(*) FROM events e WHERE e.aggregate_type = ANY(
                CASE p.projection WHEN 'sources' THEN ARRAY['knowledge_source']
                                  WHEN 'tenants' THEN ARRAY['tenant']
                                  WHEN 'conversations' THEN ARRAY['conversation']
                                  ELSE ARRAY['conversation', 'knowledge_source', 'tenant', 'account'] END))
                AND p.projection IN ('conversations', 'tenants')",
        )
        .await;
        if asked == settled
            && applied == conversation_events
            && rows == conversations
            && lagging == 0
        {
            eprintln!(
                "{transport:?}: converged {:?} after the last start ({} questions accepted)",
                last_start.elapsed(),
                accepted.len()
            );
            break true;
        }
        if last_start.elapsed() > Duration::from_secs(60) {
            break false;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let details = client
        .get(format!("{}/health/ready", service.address()))
        .send()
        .await
        .unwrap()
        .status();
    child.kill();
    pool.close().await;
    drop_database(&db).await;
    assert!(
        converged,
        "the read models did not converge within 60 s of the last start"
    );
    assert_eq!(details, 200);
}
