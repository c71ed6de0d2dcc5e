//! The relay on the real broker: every committed event reaches Kafka, once, in order; a relay
//! killed between publishing and checkpointing republishes, and the read model still applies each
//! event once; a broker outage does not stop commands.
use std::collections::{BTreeMap, HashSet};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use integration_tests::{read_model, wait_for, wait_until_projected, TestApp};
use rand::Rng;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::{Headers, Message};
use rdkafka::ClientConfig;
use serde_json::json;
use sqlx::PgPool;
use streaming::Envelope;

const WRITERS: usize = 8;
const PER_WRITER: usize = 250;

async fn append(pool: &PgPool, writer: usize, n: usize) {
    let delay = rand::thread_rng().gen_range(0..20);
    let mut tx = pool.begin().await.unwrap();
    sqlx::query(
        "INSERT INTO events (aggregate_type, aggregate_id, sequence, event_type, event_version, \
           payload, metadata, event_id, tenant_id, actor_id, actor_role, correlation_id) \
         VALUES ('knowledge_source', $1, $2, 'SyncRequested', '1.0', '{\"SyncRequested\":{\"requested_by\":\"w\"}}', \
           '{}', gen_random_uuid(), 'acme', 'writer', 'operator', $3)",
    )
    .bind(format!("acme/{:08}-0000-0000-0000-000000000000", writer))
    .bind(n as i64 + 1)
    .bind(format!("corr-{writer}-{n}"))
    .execute(&mut *tx)
    .await
    .unwrap();
    tokio::time::sleep(Duration::from_millis(delay)).await;
    tx.commit().await.unwrap();
}

/// A consumer of `topic` from its beginning. The topic is created first (as the relay would):
/// subscribed before the relay has created it, the consumer fails with UnknownTopicOrPartition.
pub async fn consumer(kafka: &streaming::KafkaSettings, topic: &str) -> StreamConsumer {
    streaming::ensure_topics(kafka, &[topic.to_string()])
        .await
        .expect("the topic exists");
    let consumer: StreamConsumer = ClientConfig::new()
        .set("bootstrap.servers", &kafka.bootstrap_servers)
        .set("group.id", format!("test-{}", uuid::Uuid::new_v4()))
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "false")
        .create()
        .unwrap();
    consumer.subscribe(&[topic]).unwrap();
    consumer
}

#[tokio::test]
async fn eight_writers_2000_events_reach_kafka_once_each_in_aggregate_order() {
    let builder = TestApp::builder()
        .streaming()
        .configure(|s| s.kafka.projections_in_process = false);
    let kafka = builder.settings().kafka.clone();
    let app = builder.spawn().await;
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
    let consumer = consumer(&kafka, &kafka.topic("knowledge_source")).await;
    for w in writers {
        w.await.unwrap();
    }
    let total = WRITERS * PER_WRITER;
    let mut seen = HashSet::new();
    let mut last_sequence: BTreeMap<String, i64> = BTreeMap::new();
    let mut received = 0;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    // Read everything, then linger a moment: a duplicate would arrive in that window.
    let mut quiet_since: Option<tokio::time::Instant> = None;
    loop {
        match tokio::time::timeout(Duration::from_millis(500), consumer.recv()).await {
            Ok(message) => {
                let message = message.unwrap();
                let envelope: Envelope =
                    serde_json::from_slice(message.payload().unwrap()).unwrap();
                received += 1;
                assert!(
                    seen.insert(envelope.event_id),
                    "event {} arrived twice",
                    envelope.event_id
                );
                let key = String::from_utf8(message.key().unwrap().to_vec()).unwrap();
                assert_eq!(key, envelope.aggregate_id, "keyed by aggregate id");
                let previous = last_sequence
                    .insert(key.clone(), envelope.sequence)
                    .unwrap_or(0);
                assert_eq!(envelope.sequence, previous + 1, "{key} out of order");
                let headers = message.headers().unwrap();
                let header = |name: &str| {
                    headers
                        .iter()
                        .find(|h| h.key == name)
                        .and_then(|h| h.value)
                        .map(|v| String::from_utf8(v.to_vec()).unwrap())
                };
                assert_eq!(header("event_id"), Some(envelope.event_id.to_string()));
                assert_eq!(header("tenant_id").as_deref(), Some("acme"));
                assert_eq!(header("ce_type").as_deref(), Some("SyncRequested"));
                assert_eq!(
                    header("correlation_id"),
                    Some(envelope.metadata.correlation_id.clone())
                );
                assert!(header("traceparent").unwrap().starts_with("00-"));
                quiet_since = None;
            }
            Err(_) => {
                if received >= total {
                    let since = *quiet_since.get_or_insert_with(tokio::time::Instant::now);
                    if since.elapsed() > Duration::from_secs(3) {
                        break;
                    }
                }
            }
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "only {received} of {total} arrived"
        );
    }
    assert_eq!(received, total, "every event once, none skipped");
    assert_eq!(last_sequence.len(), WRITERS);
    assert!(last_sequence.values().all(|&s| s == PER_WRITER as i64));
}

#[tokio::test]
async fn a_relay_killed_between_publish_and_checkpoint_duplicates_but_the_read_model_applies_once()
{
    let builder = TestApp::builder().streaming().configure(|s| {
        s.kafka.relay.in_process = false;
        s.kafka.relay.batch_size = 1000;
    });
    let kafka = builder.settings().kafka.clone();
    streaming::ensure_topics(&kafka, &answers_api::startup::topics(&kafka))
        .await
        .unwrap();
    let app = builder.spawn().await;
    let admin = app.create_tenant("acme", "alice").await;
    for i in 0..10 {
        let (conversation, answer) = app
            .ask(&admin, &format!("Question number {i} about exports"))
            .await;
        let (status, _) = app
            .call(
                reqwest::Method::PUT,
                &format!("/v1/conversations/{conversation}/answers/{answer}/feedback"),
                &admin,
                Some(json!({"reaction": if i % 2 == 0 { "upvote" } else { "downvote" }})),
            )
            .await;
        assert_eq!(status, 200);
    }
    // The reader only returns events below the cluster's commit horizon; another test's open
    // transaction (xids are cluster-wide) can hold it back for a moment.
    wait_for("every event below the commit horizon", Duration::from_secs(30), || async {
        let pending: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM events WHERE transaction_id >= pg_snapshot_xmin(pg_current_snapshot())",
        )
        .fetch_one(&app.pool)
        .await
        .unwrap();
        (pending == 0).then_some(())
    })
    .await;
    // The first relay publishes everything, then "dies" before its checkpoint.
    let first = streaming::Relay::new(app.pool.clone(), kafka.clone()).unwrap();
    let published = first.step_once(false).await.unwrap().unwrap();
    assert!(
        published >= 32,
        "tenant + 30 conversation events published: {published}"
    );
    drop(first);
    let checkpoint: i64 =
        sqlx::query_scalar("SELECT position FROM relay_checkpoints WHERE relay_name = $1")
            .bind(&kafka.relay.name)
            .fetch_one(&app.pool)
            .await
            .unwrap();
    assert_eq!(checkpoint, 0, "the checkpoint did not move");
    // Its successor publishes the same events again.
    let second = streaming::Relay::new(app.pool.clone(), kafka.clone()).unwrap();
    assert_eq!(second.step_once(true).await.unwrap(), Some(published));
    assert_eq!(second.step_once(true).await.unwrap(), Some(0));

    wait_until_projected(&app.pool, Duration::from_secs(60)).await;
    // Let every duplicate arrive too, then compare with a rebuild from the event store.
    let conversation_topic = kafka.topic("conversation");
    let consumer = consumer(&kafka, &conversation_topic).await;
    let mut on_topic = 0;
    while let Ok(Ok(_)) = tokio::time::timeout(Duration::from_secs(2), consumer.recv()).await {
        on_topic += 1;
    }
    assert_eq!(
        on_topic, 60,
        "each of the 30 conversation events is on the topic twice"
    );
    let group = format!("{}.conversations", kafka.consumer_group);
    wait_for(
        "the projection to consume every copy",
        Duration::from_secs(60),
        || {
            let (pool, kafka, group, topic) = (
                app.pool.clone(),
                kafka.clone(),
                group.clone(),
                conversation_topic.clone(),
            );
            async move {
                group_caught_up(&pool, &kafka, &group, &topic)
                    .await
                    .then_some(())
            }
        },
    )
    .await;
    assert_eq!(
        integration_tests::applied_conversation_events(&app.pool).await,
        30,
        "applied once each"
    );
    let live = read_model(&app.pool).await;
    assert_eq!(live.len(), 10);
    projections::rebuild(
        &app.pool,
        &projections::Folded(projections::conversations::Conversations),
    )
    .await
    .unwrap();
    assert_eq!(
        read_model(&app.pool).await,
        live,
        "live equals a from-scratch rebuild"
    );
}

/// Whether `group` has read to the end of every partition of `topic`: its offsets, kept in
/// PostgreSQL beside the read models, against the partitions' high watermarks.
pub async fn group_caught_up(
    pool: &sqlx::PgPool,
    kafka: &streaming::KafkaSettings,
    group: &str,
    topic: &str,
) -> bool {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    let (bootstrap, name) = (kafka.bootstrap_servers.clone(), topic.to_string());
    let watermarks = tokio::task::spawn_blocking(move || {
        let consumer: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", bootstrap)
            .create()
            .unwrap();
        let timeout = Duration::from_secs(5);
        let metadata = consumer.fetch_metadata(Some(&name), timeout).unwrap();
        metadata.topics()[0]
            .partitions()
            .iter()
            .map(|p| {
                let (_, high) = consumer.fetch_watermarks(&name, p.id(), timeout).unwrap();
                (p.id(), high)
            })
            .collect::<Vec<_>>()
    })
    .await
    .unwrap();
    for (partition, high) in watermarks {
        let at = streaming::stored_offset(
            pool,
            group,
            &streaming::TopicPartition {
                topic: topic.to_string(),
                partition,
            },
        )
        .await
        .unwrap()
        .unwrap_or(0);
        if at < high {
            return false;
        }
    }
    true
}

/// A broker of this test's own, so pausing it disturbs no other test.
struct OwnBroker {
    child: Child,
    address: String,
}

impl OwnBroker {
    fn start() -> Self {
        let address = format!("127.0.0.1:{}", integration_tests::free_port());
        let child = Command::new(std::env::var("TANSU_BIN").unwrap_or_else(|_| "tansu".into()))
            .args([
                "broker",
                "--listener-url",
                &format!("tcp://{address}"),
                "--advertised-listener-url",
                &format!("tcp://{address}"),
                "--storage-engine",
                "memory://tansu/",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("tansu is installed (scripts/services.sh installs it)");
        Self { child, address }
    }

    fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .args([signal, &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
    }
}

impl Drop for OwnBroker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test]
async fn commands_go_on_while_the_broker_is_down_and_the_read_model_converges_after() {
    let broker = OwnBroker::start();
    let app = TestApp::builder()
        .streaming()
        .configure(|s| s.kafka.bootstrap_servers = broker.address.clone())
        .spawn()
        .await;
    let admin = app.create_tenant("acme", "alice").await;
    app.ask(&admin, "Before the outage").await;
    wait_until_projected(&app.pool, Duration::from_secs(60)).await;

    broker.signal("-STOP");
    let outage = tokio::time::Instant::now();
    let mut asked = 1;
    while outage.elapsed() < Duration::from_secs(20) {
        let (status, body) = app
            .call(
                reqwest::Method::POST,
                "/v1/conversations",
                &admin,
                Some(json!({"question": format!("During the outage, question {asked}")})),
            )
            .await;
        assert_eq!(
            status, 201,
            "commands succeed while the broker is down: {body}"
        );
        asked += 1;
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    broker.signal("-CONT");

    // Requests in flight during the pause time out on the client (librdkafka's socket timeout is
    // 60 s) before it reconnects: convergence takes a minute or two, bounded here at four.
    wait_until_projected(&app.pool, Duration::from_secs(240)).await;
    let rows = read_model(&app.pool).await;
    assert_eq!(
        rows.len(),
        asked,
        "every conversation reached the read model"
    );
    // Every event was published at least once by this process's relay, and none waits now.
    let stored = app.event_count().await as f64;
    let metrics = app.operator_get("/metrics").await.text().await.unwrap();
    let value = |name: &str| integration_tests::metric_value(&metrics, name, &[]);
    let published = value("answers_relay_events_published_total").unwrap_or(0.0);
    assert!(published >= stored, "{published} published of {stored}");
    assert_eq!(value("answers_relay_lag_seconds"), Some(0.0), "{metrics}");
}

/// A checkpoint that cannot be read must stop the relay: reading it as 0 would republish the
/// whole store to every consumer.
#[tokio::test]
async fn an_unreadable_checkpoint_stops_the_relay_instead_of_republishing_the_store() {
    let builder = TestApp::builder().streaming().configure(|s| {
        s.kafka.relay.in_process = false;
        s.kafka.projections_in_process = false;
    });
    let settings = builder.settings().clone();
    let app = builder.spawn().await;
    app.create_tenant("acme", "alice").await;
    // Damage the row the way a bad manual repair would: a value that is no transaction id.
    sqlx::query(
        "ALTER TABLE relay_checkpoints ALTER COLUMN transaction_id TYPE text USING transaction_id::text",
    )
    .execute(&app.pool)
    .await
    .unwrap();
    sqlx::query("INSERT INTO relay_checkpoints (relay_name, transaction_id, position) VALUES ($1, 'garbage', 7)")
        .bind(&settings.kafka.relay.name)
        .execute(&app.pool)
        .await
        .unwrap();

    let relay = streaming::Relay::new(app.pool.clone(), settings.kafka.clone()).unwrap();
    let err = relay
        .step_once(true)
        .await
        .expect_err("an unreadable checkpoint is an error, not position 0");
    assert!(
        matches!(err, streaming::RelayError::UnreadableCheckpoint { ref value, .. } if value == "garbage"),
        "{err}"
    );
    // The supervised loop does not retry it forever: it stops with that error, counted.
    let registry = prometheus::Registry::new();
    for c in relay.collectors() {
        registry.register(c).unwrap();
    }
    let fatal = tokio::time::timeout(
        Duration::from_secs(30),
        relay.run(shutdown::Shutdown::new()),
    )
    .await
    .expect("the relay stops by itself")
    .expect_err("a fatal error");
    assert!(fatal.is_fatal(), "{fatal}");
    let mut text = Vec::new();
    prometheus::Encoder::encode(
        &prometheus::TextEncoder::new(),
        &registry.gather(),
        &mut text,
    )
    .unwrap();
    let text = String::from_utf8(text).unwrap();
    let counted = format!(
        "answers_relay_errors_total{{kind=\"unreadable_checkpoint\",relay=\"{}\"}} 1",
        settings.kafka.relay.name
    );
    assert!(text.lines().any(|l| l == counted), "{counted} in\n{text}");
}
