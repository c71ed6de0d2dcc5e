//! `answers bench --streaming`: the streaming path, each figure beside its ceiling.
//! - relay: events/s from the store to the broker, beside a raw rdkafka producer sending the
//!   same envelopes to the same broker;
//! - command → read model latency at a steady command rate, beside the command's own latency;
//! - projection rebuild speed over the whole store, beside a read-only pass over the same events.
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use domain::Role;
use event_store::{read_batch, Checkpoint};
use rdkafka::producer::{FutureProducer, FutureRecord};
use serde_json::json;
use sqlx::migrate::MigrateDatabase;
use sqlx::{PgPool, Postgres};
use streaming::{Envelope, Relay};
use tokio::sync::Mutex;
use uuid::Uuid;

use crate::bench::{header, ms, percentile, BenchArgs, Measurement};
use crate::write_stdout;
use answers_api::auth::JwtKeys;
use answers_api::{startup, Application, Settings};

type Fresh = fn(&Settings, usize) -> (Settings, String);

pub async fn run(settings: &Settings, args: &BenchArgs, fresh: Fresh) -> anyhow::Result<()> {
    let (store_settings, store_db) = fresh(settings, args.clients);
    let result = store_benches(&store_settings, args).await;
    let _ = Postgres::force_drop_database(&store_db).await;
    let mut report = result?;

    for transport in [Transport::Embedded, Transport::Kafka] {
        let (latency_settings, latency_db) = fresh(settings, args.clients);
        let result = latency_bench(latency_settings, args, transport).await;
        let _ = Postgres::force_drop_database(&latency_db).await;
        report.push_str(&result?);
    }
    write_stdout(&report)
}

fn measurement(name: &str, count: usize, elapsed: Duration) -> Measurement {
    Measurement {
        name: name.to_string(),
        count,
        elapsed,
        latencies: vec![],
    }
}

/// Relay throughput and rebuild speed, on events written straight into a fresh store.
async fn store_benches(settings: &Settings, args: &BenchArgs) -> anyhow::Result<String> {
    let pool = startup::connect(&settings.database).await?;
    event_store::migrate(&pool).await?;
    let kafka = settings.kafka.clone();
    let mut topics = startup::topics(&kafka);
    let ceiling_topic = format!("{}.ceiling", kafka.topic_prefix);
    topics.push(ceiling_topic.clone());
    streaming::ensure_topics(&kafka, &topics).await?;

    // Relay: N knowledge-source events over 100 aggregates, written through the event store.
    let tenant: domain::TenantId = "bench".parse()?;
    crate::events::append_sync_requests(&pool, &tenant, args.relay_events).await?;
    let mut relay_kafka = kafka.clone();
    relay_kafka.relay.batch_size = 2000;
    let relay = Relay::new(pool.clone(), relay_kafka)?;
    let started = Instant::now();
    let mut published = 0;
    while published < args.relay_events {
        match relay.step_once(true).await? {
            Some(0) | None => tokio::time::sleep(Duration::from_millis(5)).await,
            Some(n) => published += n,
        }
    }
    let relay_m = measurement("relay: store -> broker", published, started.elapsed());

    // Its ceiling: the same envelopes, already in memory, straight to the broker.
    let mut envelopes = Vec::with_capacity(args.relay_events);
    let mut checkpoint = Checkpoint::START;
    loop {
        let batch = read_batch(&pool, checkpoint, 5000).await?;
        let Some(last) = batch.last() else { break };
        checkpoint = last.checkpoint();
        envelopes.extend(batch.iter().map(Envelope::from));
    }
    let producer: FutureProducer = kafka.producer_config().create()?;
    let started = Instant::now();
    let mut deliveries = Vec::with_capacity(envelopes.len());
    for envelope in &envelopes {
        let value = serde_json::to_vec(envelope)?;
        let mut record = FutureRecord::to(&ceiling_topic)
            .key(envelope.aggregate_id.as_bytes())
            .payload(&value)
            .headers(streaming::headers(envelope, None));
        loop {
            match producer.send_result(record) {
                Ok(d) => {
                    deliveries.push(d);
                    break;
                }
                Err((_, r)) => {
                    record = r;
                    tokio::time::sleep(Duration::from_millis(2)).await;
                }
            }
        }
    }
    for d in deliveries {
        d.await?.map_err(|(e, _)| e)?;
    }
    let producer_m = measurement(
        "ceiling: raw producer, same envelopes",
        envelopes.len(),
        started.elapsed(),
    );

    // Rebuild: a quarter as many conversations, 4 events each.
    let conversations = (args.rebuild_events / 4).max(1) as i64;
    let started = Instant::now();
    seed_conversations(&pool, conversations).await?;
    let seeded = started.elapsed();
    let projection = projections::Folded(projections::conversations::Conversations);
    let rss = crate::memory::RssSampler::start();
    let report = projections::rebuild(&pool, &projection).await?;
    let rebuild_rss = rss.peak();
    drop(rss);
    let rebuild_m = measurement(
        "rebuild conversations from 0",
        report.events_read as usize,
        Duration::from_secs_f64(report.seconds),
    );
    let started = Instant::now();
    let mut read = 0;
    let mut checkpoint = Checkpoint::START;
    loop {
        let batch = read_batch(&pool, checkpoint, 2000).await?;
        let Some(last) = batch.last() else { break };
        checkpoint = last.checkpoint();
        read += batch.len();
    }
    let read_m = measurement(
        "ceiling: read-only pass, same events",
        read,
        started.elapsed(),
    );

    let processes = projection_processes(settings, &pool, &relay).await?;

    let mut out = format!(
        "\nstreaming (broker {}, producer_batch_messages {}, linger.ms {})\n\n{}",
        kafka.bootstrap_servers,
        kafka.producer_batch_messages,
        kafka.linger_ms,
        header()
    );
    for m in [&relay_m, &producer_m] {
        out.push_str(&m.line());
    }
    out.push_str(&format!(
        "relay / raw producer: {:.1}%\n\n",
        100.0 * relay_m.per_second() / producer_m.per_second()
    ));
    out.push_str(&format!(
        "store of {} events ({} conversations written in {:.1}s, {} applied by the rebuild)\n",
        read,
        conversations,
        seeded.as_secs_f64(),
        report.events_applied
    ));
    for m in [&rebuild_m, &read_m] {
        out.push_str(&m.line());
    }
    out.push_str(&format!(
        "rebuild / read-only pass: {:.1}%\npeak RSS of this process during the rebuild: {}\n",
        100.0 * rebuild_m.per_second() / read_m.per_second(),
        rebuild_rss.map_or("unknown".into(), |m| format!("{m:.0} MiB"))
    ));
    out.push_str(&processes);
    Ok(out)
}

/// Projection throughput with one and with two `answers project` processes sharing the
/// partitions (docs/streaming.md, "Partition ownership"): the store's conversation events are
/// published, then for each count the read models are emptied, fresh processes of this binary
/// start on a consumer group of their own, and the time until the conversations projection has
/// applied every event is measured (process start-up and partition assignment included).
async fn projection_processes(
    settings: &Settings,
    pool: &PgPool,
    relay: &Relay,
) -> anyhow::Result<String> {
    while relay.step_once(true).await?.unwrap_or(0) > 0 {}
    let events: i64 =
        sqlx::query_scalar("SELECT count(*) FROM events WHERE aggregate_type = 'conversation'")
            .fetch_one(pool)
            .await?;
    let exe = std::env::current_exe()?;
    let mut lines = Vec::new();
    let mut rates = Vec::new();
    for count in [1, 2] {
        for projection in projections::all() {
            for table in projection.tables() {
                sqlx::query(&format!("DELETE FROM {table}"))
                    .execute(pool)
                    .await?;
            }
        }
        sqlx::query("DELETE FROM projection_status")
            .execute(pool)
            .await?;
        let group = format!("bench-{count}-{}", Uuid::new_v4().simple());
        let started = Instant::now();
        let mut children = Vec::new();
        for _ in 0..count {
            children.push(
                std::process::Command::new(&exe)
                    .arg("project")
                    .env(
                        "APP__DATABASE__URL",
                        secrecy::ExposeSecret::expose_secret(&settings.database.url),
                    )
                    .env(
                        "APP__KAFKA__BOOTSTRAP_SERVERS",
                        &settings.kafka.bootstrap_servers,
                    )
                    .env("APP__KAFKA__TOPIC_PREFIX", &settings.kafka.topic_prefix)
                    .env("APP__KAFKA__CONSUMER_GROUP", &group)
                    .env("APP__SERVER__PORT", "0")
                    .env("APP__LOG__FILTER", "warn")
                    .stdout(std::process::Stdio::null())
                    .spawn()?,
            );
        }
        let deadline = started + Duration::from_secs(600);
        let outcome = loop {
            let applied: Option<i64> = sqlx::query_scalar(
                "SELECT applied_events FROM projection_status WHERE projection = 'conversations'",
            )
            .fetch_optional(pool)
            .await?;
            if applied == Some(events) {
                break Ok(started.elapsed());
            }
            if Instant::now() > deadline {
                break Err(anyhow::anyhow!(
                    "{count} projection processes did not apply {events} events within 600 s"
                ));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        for child in &mut children {
            let _ = child.kill();
            let _ = child.wait();
        }
        let m = measurement(
            &format!("conversations by {count} `answers project` process(es)"),
            usize::try_from(events)?,
            outcome?,
        );
        rates.push(m.per_second());
        lines.push(m.line());
    }
    Ok(format!(
        "\nprojection processes on the same partitions ({events} conversation events, start-up included)\n{}{}two processes / one: {:.2}x\n",
        header(),
        lines.concat(),
        rates[1] / rates[0]
    ))
}

/// QuestionAsked, AnswerRecorded, FeedbackGiven, ConversationResolved for each conversation,
/// written through the event store.
async fn seed_conversations(pool: &PgPool, conversations: i64) -> anyhow::Result<()> {
    let tenant: domain::TenantId = "bench".parse()?;
    crate::events::append_conversations(pool, &tenant, usize::try_from(conversations)?).await
}

/// How the projections get their events.
#[derive(Clone, Copy, Debug)]
enum Transport {
    /// Following the event store in the service (docs/streaming.md).
    Embedded,
    /// The relay and Kafka consumers in the service.
    Kafka,
}

/// Commands at a steady rate on a running service with the projections inside (on
/// `transport`); the time from sending each command until its conversation is in the read
/// model.
async fn latency_bench(
    mut settings: Settings,
    args: &BenchArgs,
    transport: Transport,
) -> anyhow::Result<String> {
    match transport {
        Transport::Kafka => {
            settings.kafka.enabled = true;
            settings.kafka.relay.idle_ms = 5;
            settings.embedded.enabled = false;
        }
        Transport::Embedded => {
            settings.kafka.enabled = false;
            settings.embedded.enabled = true;
            settings.embedded.idle_ms = 5;
        }
    }
    let keys = JwtKeys::new(&settings.auth)?;
    // The benchmark measures the service, not its rate limits (which would refuse the load).
    let mut settings = settings;
    settings.rate_limits.enabled = false;
    let app = Application::build(settings).await?;
    let address = format!("http://127.0.0.1:{}", app.port());
    let pool = app.pool().clone();
    tokio::spawn(app.run_until_stopped());
    let token = keys.mint("bench-admin", "bench", Role::Admin, 3600)?;
    let client = reqwest::Client::new();
    client
        .post(format!("{address}/v1/tenant"))
        .bearer_auth(&token)
        .json(&json!({"name": "Bench"}))
        .send()
        .await?
        .error_for_status()?;

    let seen: Arc<Mutex<HashMap<Uuid, Instant>>> = Arc::default();
    let poller = {
        let (seen, pool) = (seen.clone(), pool.clone());
        tokio::spawn(async move {
            loop {
                let ids: Vec<Uuid> =
                    sqlx::query_scalar("SELECT conversation_id FROM rm_conversations")
                        .fetch_all(&pool)
                        .await
                        .unwrap_or_default();
                let now = Instant::now();
                let mut seen = seen.lock().await;
                for id in ids {
                    seen.entry(id).or_insert(now);
                }
                drop(seen);
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        })
    };
    // Warm up: the first conversation waits for the consumer group to form.
    let warm = ask(&client, &address, &token, 0).await?.0;
    wait_seen(&seen, &[warm], Duration::from_secs(60)).await?;

    let interval = Duration::from_secs_f64(1.0 / f64::from(args.rate.max(1)));
    let total = (u64::from(args.rate) * args.latency_secs) as usize;
    let mut tasks = Vec::with_capacity(total);
    let mut ticker = tokio::time::interval(interval);
    for i in 0..total {
        ticker.tick().await;
        let (client, address, token) = (client.clone(), address.clone(), token.clone());
        tasks.push(tokio::spawn(async move {
            let sent = Instant::now();
            let (id, _) = ask(&client, &address, &token, i + 1).await?;
            Ok::<_, anyhow::Error>((id, sent, sent.elapsed()))
        }));
    }
    let mut sent = Vec::with_capacity(total);
    for t in tasks {
        sent.push(t.await??);
    }
    let ids: Vec<Uuid> = sent.iter().map(|(id, _, _)| *id).collect();
    wait_seen(&seen, &ids, Duration::from_secs(120)).await?;
    poller.abort();
    let seen = seen.lock().await;
    let visible: Vec<Duration> = sent
        .iter()
        .map(|(id, at, _)| seen[id].saturating_duration_since(*at))
        .collect();
    let command: Vec<Duration> = sent.iter().map(|(_, _, d)| *d).collect();
    let line = |name: &str, d: &[Duration]| {
        format!(
            "{:<40} {:>9.2} {:>9.2} {:>9.2}\n",
            name,
            ms(percentile(d, 50.0)),
            ms(percentile(d, 95.0)),
            ms(percentile(d, 99.0))
        )
    };
    let mut out = format!(
        "\ncommand -> read model ({} transport), {} commands at {}/s (polled every 2 ms)\n\n{:<40} {:>9} {:>9} {:>9}\n",
        format!("{transport:?}").to_lowercase(),
        total,
        args.rate,
        "latency",
        "p50 ms",
        "p95 ms",
        "p99 ms"
    );
    out.push_str(&line("command accepted -> visible in read model", &visible));
    out.push_str(&line("ceiling: the command's own HTTP latency", &command));
    out.push_str(&format!(
        "p50 visible / p50 command: {:.1}x\n",
        ms(percentile(&visible, 50.0)) / ms(percentile(&command, 50.0)).max(0.001)
    ));
    Ok(out)
}

async fn ask(
    client: &reqwest::Client,
    address: &str,
    token: &str,
    i: usize,
) -> anyhow::Result<(Uuid, Duration)> {
    let started = Instant::now();
    let response = client
        .post(format!("{address}/v1/conversations"))
        .bearer_auth(token)
        .json(&json!({"question": format!("Latency question {i}")}))
        .send()
        .await?
        .error_for_status()?;
    let body: serde_json::Value = response.json().await?;
    let id = body["id"].as_str().and_then(|s| Uuid::parse_str(s).ok());
    Ok((
        id.ok_or_else(|| anyhow::anyhow!("no id in {body}"))?,
        started.elapsed(),
    ))
}

async fn wait_seen(
    seen: &Mutex<HashMap<Uuid, Instant>>,
    ids: &[Uuid],
    timeout: Duration,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + timeout;
    loop {
        if ids
            .iter()
            .all(|id| seen.try_lock().map(|s| s.contains_key(id)).unwrap_or(false))
        {
            return Ok(());
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "the read model did not catch up within {timeout:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
