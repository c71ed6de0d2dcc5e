//! The projection runtime on the real broker: read-your-writes, poison events, a failure
//! mid-batch, and a rebuild that equals the live model while reads go on.
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use integration_tests::{read_model, wait_for, wait_until_projected, TestApp};
use projections::conversations::Conversations;
use projections::{Folded, Projection, ProjectionRunner};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::ClientConfig;
use reqwest::Method;
use serde_json::{json, Value};

/// A realistic mix: questions, follow-ups, feedback changes, resolutions, escalations, a block.
async fn activity(app: &TestApp, token: &str, conversations: usize) {
    for i in 0..conversations {
        let (conversation, answer) = app
            .ask(token, &format!("How do I set up integration {i}?"))
            .await;
        let feedback = format!("/v1/conversations/{conversation}/answers/{answer}/feedback");
        app.call(
            Method::PUT,
            &feedback,
            token,
            Some(json!({"reaction": "upvote"})),
        )
        .await;
        if i % 2 == 0 {
            app.call(
                Method::PUT,
                &feedback,
                token,
                Some(json!({"reaction": "downvote", "reasons": ["irrelevant"]})),
            )
            .await;
            app.call(
                Method::POST,
                &format!("/v1/conversations/{conversation}/questions"),
                token,
                Some(json!({"question": "And with SSO enabled?"})),
            )
            .await;
        }
        match i % 3 {
            0 => {
                app.call(
                    Method::POST,
                    &format!("/v1/conversations/{conversation}/resolve"),
                    token,
                    None,
                )
                .await
            }
            1 => {
                app.call(
                    Method::POST,
                    &format!("/v1/conversations/{conversation}/escalate"),
                    token,
                    Some(json!({"reason": "needs a human"})),
                )
                .await
            }
            _ => (200, Value::Null),
        };
    }
    app.call(
        Method::POST,
        "/v1/conversations",
        token,
        Some(json!({"question": "my card 4111 1111 1111 1111 failed"})),
    )
    .await;
}

#[tokio::test]
async fn a_command_is_soon_visible_and_the_api_says_how_fresh_the_read_model_is() {
    let app = TestApp::builder().streaming().spawn().await;
    let admin = app.create_tenant("acme", "alice").await;
    let other = app.create_tenant("other", "olaf").await;
    let (status, asked) = app
        .call(
            Method::POST,
            "/v1/conversations",
            &admin,
            Some(json!({"question": "Where are invoices?"})),
        )
        .await;
    assert_eq!(status, 201);
    let id = asked["id"].as_str().unwrap().to_string();
    let version = asked["version"].as_i64().unwrap();

    let seen = wait_for(
        "the conversation in the read model",
        Duration::from_secs(30),
        || async {
            let (status, body) = app
                .call(
                    Method::GET,
                    &format!("/v1/conversations/{id}"),
                    &admin,
                    None,
                )
                .await;
            (status == 200 && body["version"].as_i64() >= Some(version)).then_some(body)
        },
    )
    .await;
    assert_eq!(seen["questions"][0]["text"], "Where are invoices?");
    assert_eq!(seen["questions"][0]["status"], "answered");
    assert_eq!(
        seen["questions"][0]["answer"]["answer_id"],
        asked["answer"]["answer_id"]
    );
    assert!(seen["freshness"]["position"].as_i64().unwrap() > 0);

    let (status, list) = app
        .call(Method::GET, "/v1/conversations", &admin, None)
        .await;
    assert_eq!(status, 200);
    assert_eq!(list["items"].as_array().unwrap().len(), 1);
    assert_eq!(list["freshness"]["lag_events"], 0);

    // Another tenant sees none of it.
    let (status, _) = app
        .call(
            Method::GET,
            &format!("/v1/conversations/{id}"),
            &other,
            None,
        )
        .await;
    assert_eq!(status, 404);
    let (_, theirs) = app
        .call(Method::GET, "/v1/conversations", &other, None)
        .await;
    assert_eq!(theirs["items"], json!([]));
}

#[tokio::test]
async fn cursor_pagination_walks_every_conversation_once() {
    let app = TestApp::builder().streaming().spawn().await;
    let admin = app.create_tenant("acme", "alice").await;
    for i in 0..7 {
        app.ask(&admin, &format!("Question {i} for paging")).await;
    }
    wait_until_projected(&app.pool, Duration::from_secs(60)).await;
    let mut ids = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let path = match &cursor {
            Some(c) => format!("/v1/conversations?limit=3&cursor={c}"),
            None => "/v1/conversations?limit=3".to_string(),
        };
        let (status, page) = app.call(Method::GET, &path, &admin, None).await;
        assert_eq!(status, 200);
        ids.extend(
            page["items"]
                .as_array()
                .unwrap()
                .iter()
                .map(|c| c["id"].as_str().unwrap().to_string()),
        );
        match page["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_string()),
            None => break,
        }
    }
    let unique: std::collections::HashSet<_> = ids.iter().collect();
    assert_eq!((ids.len(), unique.len()), (7, 7));
    let (status, problem) = app
        .call(
            Method::GET,
            "/v1/conversations?cursor=garbage",
            &admin,
            None,
        )
        .await;
    assert_eq!(
        (status, problem["code"].as_str()),
        (400, Some("invalid_cursor"))
    );
}

fn producer(bootstrap: &str) -> FutureProducer {
    ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .create()
        .unwrap()
}

#[tokio::test]
async fn poison_events_are_dead_lettered_and_later_events_still_apply() {
    let builder = TestApp::builder().streaming();
    let kafka = builder.settings().kafka.clone();
    let app = builder.spawn().await;
    let admin = app.create_tenant("acme", "alice").await;
    app.ask(&admin, "Before the poison").await;
    wait_until_projected(&app.pool, Duration::from_secs(60)).await;

    // Two kinds of poison on the conversations topic: bytes that are no envelope, and an
    // envelope whose event this projection cannot apply.
    let topic = kafka.topic("conversation");
    let producer = producer(&kafka.bootstrap_servers);
    producer
        .send(
            FutureRecord::to(&topic)
                .key("acme/x")
                .payload("this is not json"),
            Duration::from_secs(5),
        )
        .await
        .unwrap();
    let stray = json!({
        "event_id": uuid::Uuid::new_v4(), "event_type": "ConversationResolved", "event_version": "1.0",
        "tenant_id": "acme", "aggregate_type": "conversation",
        "aggregate_id": format!("acme/{}", uuid::Uuid::new_v4()), "sequence": 5, "position": 999999,
        "transaction_id": 1, "recorded_at": "2026-11-25T00:00:00Z",
        "payload": {"ConversationResolved": {"by": "ghost"}},
        "metadata": {"actor_id": "ghost", "actor_role": "admin", "correlation_id": "c", "causation_id": null, "idempotency_key": null}
    });
    producer
        .send(
            FutureRecord::to(&topic)
                .key("acme/y")
                .payload(&stray.to_string()),
            Duration::from_secs(5),
        )
        .await
        .unwrap();

    let (conversation, _) = app.ask(&admin, "After the poison").await;
    wait_for(
        "the later event to be applied",
        Duration::from_secs(60),
        || async {
            let (status, _) = app
                .call(
                    Method::GET,
                    &format!("/v1/conversations/{conversation}"),
                    &admin,
                    None,
                )
                .await;
            (status == 200).then_some(())
        },
    )
    .await;
    // The two went to different partitions: their order is not fixed.
    let letters: Vec<(String, Option<String>)> =
        wait_for("both dead letters", Duration::from_secs(30), || async {
            let letters: Vec<(String, Option<String>)> =
                sqlx::query_as("SELECT error, tenant_id FROM dead_letters WHERE projection = 'conversations' ORDER BY error DESC")
                    .fetch_all(&app.pool)
                    .await
                    .unwrap();
            (letters.len() >= 2).then_some(letters)
        })
        .await;
    assert_eq!(letters.len(), 2, "{letters:?}");
    assert!(
        letters[0].0.contains("undecodable envelope") && letters[0].1.is_none(),
        "{letters:?}"
    );
    assert!(
        letters[1].0.contains("never started") && letters[1].1.as_deref() == Some("acme"),
        "{letters:?}"
    );

    // The questions projection consumes the same topic on its own: wait for its letter too.
    wait_for(
        "the questions projection's letter",
        Duration::from_secs(30),
        || async {
            let n: i64 = sqlx::query_scalar(
                "SELECT count(DISTINCT projection) FROM dead_letters WHERE tenant_id = 'acme'",
            )
            .fetch_one(&app.pool)
            .await
            .unwrap();
            (n == 2).then_some(())
        },
    )
    .await;
    // The admin API lists the tenant's letter; a retry that still fails says so and keeps it open.
    let (status, listed) = app
        .call(Method::GET, "/v1/admin/dead-letters", &admin, None)
        .await;
    assert_eq!(status, 200);
    // The stray resolution is the tenant's (the undecodable bytes have no tenant and are listed
    // to nobody); the conversations and questions projections each refused it.
    let listed: Vec<Value> = listed.as_array().unwrap().clone();
    let projections: std::collections::BTreeSet<&str> = listed
        .iter()
        .map(|l| l["projection"].as_str().unwrap())
        .collect();
    assert_eq!(
        projections,
        ["conversations", "questions"].into(),
        "{listed:?}"
    );
    assert!(
        listed.iter().all(|l| l["error"]
            .as_str()
            .unwrap()
            .contains("ConversationResolved")),
        "{listed:?}"
    );
    let listed: Vec<Value> = listed
        .into_iter()
        .filter(|l| l["projection"] == "conversations")
        .collect();
    let id = listed[0]["id"].as_i64().unwrap();
    let (status, problem) = app
        .call(
            Method::POST,
            &format!("/v1/admin/dead-letters/{id}/retry"),
            &admin,
            None,
        )
        .await;
    assert_eq!(
        (status, problem["code"].as_str()),
        (409, Some("dead_letter_still_failing"))
    );
    let viewer = app.token("acme", domain::Role::Viewer, "vera");
    let (status, _) = app
        .call(Method::GET, "/v1/admin/dead-letters", &viewer, None)
        .await;
    assert_eq!(status, 403);

    // The status reports the error and the open letter.
    let (_, status_body) = app
        .call(
            Method::GET,
            "/v1/admin/projections",
            &app.platform_token,
            None,
        )
        .await;
    let conversations = &status_body["projections"][0];
    assert_eq!(conversations["projection"], "conversations");
    let last_error = conversations["last_error"].as_str().unwrap();
    assert!(
        last_error.contains("never started") || last_error.contains("undecodable"),
        "{last_error}"
    );
    assert_eq!(conversations["open_dead_letters"], 2);
}

#[tokio::test]
async fn a_dead_letter_whose_cause_is_gone_applies_on_retry() {
    let app = TestApp::builder().streaming().spawn().await;
    let admin = app.create_tenant("acme", "alice").await;
    let (conversation, _) = app.ask(&admin, "A question").await;
    wait_until_projected(&app.pool, Duration::from_secs(60)).await;
    // A letter left by an earlier, buggy version: a resolution the projection refused then.
    let next: i64 = sqlx::query_scalar("SELECT version + 1 FROM rm_conversations")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    let envelope = json!({
        "event_id": uuid::Uuid::new_v4(), "event_type": "ConversationResolved", "event_version": "1.0",
        "tenant_id": "acme", "aggregate_type": "conversation", "aggregate_id": format!("acme/{conversation}"),
        "sequence": next, "position": 424242, "transaction_id": 1, "recorded_at": "2026-11-25T00:00:00Z",
        "payload": {"ConversationResolved": {"by": "alice"}},
        "metadata": {"actor_id": "alice", "actor_role": "admin", "correlation_id": "c", "causation_id": null, "idempotency_key": null}
    });
    let id: i64 = sqlx::query_scalar(
        "INSERT INTO dead_letters (projection, topic, kafka_partition, kafka_offset, payload, error, tenant_id) \
         VALUES ('conversations', 't', 0, 0, $1, 'old bug', 'acme') RETURNING id",
    )
    .bind(envelope.to_string())
    .fetch_one(&app.pool)
    .await
    .unwrap();
    let (status, letter) = app
        .call(
            Method::POST,
            &format!("/v1/admin/dead-letters/{id}/retry"),
            &admin,
            None,
        )
        .await;
    assert_eq!(status, 200, "{letter}");
    assert!(letter["resolved_at"].is_string());
    let (_, seen) = app
        .call(
            Method::GET,
            &format!("/v1/conversations/{conversation}"),
            &admin,
            None,
        )
        .await;
    assert_eq!(seen["status"], "resolved");
}

fn kafka_runner(
    app: &TestApp,
    kafka: &streaming::KafkaSettings,
    projection: Arc<dyn Projection>,
) -> ProjectionRunner<streaming::KafkaSource> {
    let source = streaming::KafkaSource::for_projection(
        kafka.clone(),
        app.pool.clone(),
        projection.as_ref(),
    );
    ProjectionRunner::new(app.pool.clone(), projection, source)
}

#[tokio::test]
async fn a_projection_failing_mid_batch_then_restarted_equals_a_rebuild() {
    let builder = TestApp::builder()
        .streaming()
        .configure(|s| s.kafka.projections_in_process = false);
    let kafka = builder.settings().kafka.clone();
    let app = builder.spawn().await;
    let admin = app.create_tenant("acme", "alice").await;
    activity(&app, &admin, 8).await;
    integration_tests::wait_until_published(&app.pool).await;

    let mut failing = kafka_runner(
        &app,
        &kafka,
        Arc::new(integration_tests::HookedConversations(
            integration_tests::fail_once_after(9),
        )),
    );
    let err = tokio::time::timeout(Duration::from_secs(60), failing.run())
        .await
        .expect("the injected failure stops the runner")
        .unwrap_err();
    let report = projections::error_chain(&err);
    assert!(report.contains("injected failure"), "{report}");
    drop(failing);
    let partial = integration_tests::applied_conversation_events(&app.pool).await;
    assert_eq!(partial, 9, "nine applied before the failure");

    let restarted = kafka_runner(&app, &kafka, Arc::new(Folded(Conversations)));
    let task = tokio::spawn(restarted.run_supervised());
    wait_until_projected(&app.pool, Duration::from_secs(60)).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    task.abort();
    let stored = integration_tests::stored_conversation_events(&app.pool).await;
    assert_eq!(
        integration_tests::applied_conversation_events(&app.pool).await,
        stored,
        "each applied once"
    );
    let live = read_model(&app.pool).await;
    projections::rebuild(&app.pool, &Folded(Conversations))
        .await
        .unwrap();
    assert_eq!(read_model(&app.pool).await, live);
}

#[tokio::test]
async fn a_rebuild_from_zero_equals_the_live_model_while_reads_keep_answering() {
    rebuild_while_reading(TestApp::builder().streaming().spawn().await).await;
}

#[tokio::test]
async fn a_rebuild_while_serving_on_the_embedded_transport_equals_the_live_model() {
    rebuild_while_reading(TestApp::builder().embedded().spawn().await).await;
}

/// A rebuild of the conversations projection while four readers hammer the API, on whichever
/// transport `app` runs: every read answered in full, the rebuilt model equal row for row.
async fn rebuild_while_reading(app: TestApp) {
    let admin = app.create_tenant("acme", "alice").await;
    activity(&app, &admin, 12).await;
    wait_until_projected(&app.pool, Duration::from_secs(60)).await;
    let live = read_model(&app.pool).await;
    assert_eq!(live.len(), 13);

    // Readers hammer the API for the whole rebuild.
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let readers: Vec<_> = (0..4)
        .map(|_| {
            let (client, address, token, stop) = (
                app.client.clone(),
                app.address.clone(),
                admin.clone(),
                stop.clone(),
            );
            tokio::spawn(async move {
                let (mut ok, mut failed) = (0, 0);
                while !stop.load(Ordering::Relaxed) {
                    let response = client
                        .get(format!("{address}/v1/conversations?limit=100"))
                        .bearer_auth(&token)
                        .send()
                        .await
                        .unwrap();
                    let status = response.status().as_u16();
                    let items = response.json::<Value>().await.unwrap()["items"]
                        .as_array()
                        .map(Vec::len);
                    if status == 200 && items == Some(13) {
                        ok += 1;
                    } else {
                        failed += 1;
                    }
                }
                (ok, failed)
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let (status, _) = app
        .call(
            Method::POST,
            "/v1/admin/projections/conversations/rebuild",
            &app.platform_token,
            None,
        )
        .await;
    assert_eq!(status, 202);
    wait_for("the rebuild to finish", Duration::from_secs(60), || async {
        let (_, body) = app
            .call(
                Method::GET,
                "/v1/admin/projections",
                &app.platform_token,
                None,
            )
            .await;
        body["projections"][0]["rebuilt_at"]
            .is_string()
            .then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    stop.store(true, Ordering::Relaxed);
    for reader in readers {
        let (ok, failed) = reader.await.unwrap();
        assert_eq!(failed, 0, "every read answered in full during the rebuild");
        assert!(ok > 0);
    }
    assert_eq!(read_model(&app.pool).await, live, "row for row");

    let (status, _) = app
        .call(
            Method::POST,
            "/v1/admin/projections/nope/rebuild",
            &app.platform_token,
            None,
        )
        .await;
    assert_eq!(status, 404);
    // A projection serves every tenant: no tenant token operates it, an admin's neither.
    let operator = app.token("acme", domain::Role::Operator, "olga");
    for token in [&admin, &operator] {
        for (method, path) in [
            (Method::POST, "/v1/admin/projections/conversations/rebuild"),
            (Method::GET, "/v1/admin/projections"),
        ] {
            let (status, problem) = app.call(method, path, token, None).await;
            assert_eq!(
                (status, problem["code"].as_str()),
                (403, Some("platform_only"))
            );
        }
    }
}
