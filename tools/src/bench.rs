//! `answers bench`: throughput and latency of real commands over HTTP, beside the ceiling below
//! us — a plain single-row INSERT + COMMIT of an equivalent event row into the same Postgres at
//! the same concurrency. It starts its own service on a fresh database, so it measures the
//! production start-up and code path, and drops that database at the end.
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Args;
use domain::Role;
use secrecy::ExposeSecret;
use serde_json::json;
use sqlx::migrate::MigrateDatabase;
use sqlx::postgres::PgPoolOptions;
use sqlx::Postgres;

use crate::write_stdout;
use answers_api::auth::JwtKeys;
use answers_api::{Application, Settings};

#[derive(Debug, Clone, Args)]
pub struct BenchArgs {
    /// Concurrent clients.
    #[arg(long, default_value_t = 16)]
    pub clients: usize,
    /// Commands per workload.
    #[arg(long, default_value_t = 4000)]
    pub commands: usize,
    /// Also measure the streaming path (needs the broker: `kafka.bootstrap_servers`).
    #[arg(long)]
    pub streaming: bool,
    /// Events the relay publishes in the relay-throughput run.
    #[arg(long, default_value_t = 20_000)]
    pub relay_events: usize,
    /// Events in the store for the rebuild run (a quarter as many conversations).
    #[arg(long, default_value_t = 1_000_000)]
    pub rebuild_events: usize,
    /// Commands per second in the command-to-read-model latency run.
    #[arg(long, default_value_t = 40)]
    pub rate: u32,
    /// How long the latency run sends commands.
    #[arg(long, default_value_t = 10)]
    pub latency_secs: u64,
    /// Also measure asking through the real Kapa client against a local fake Kapa.
    #[arg(long)]
    pub kapa: bool,
    /// Also measure the read APIs over this many stored events of ten tenants, every
    /// projection rebuilt from them (0: skip; the figure is 1000000).
    #[arg(long, default_value_t = 0)]
    pub read_events: usize,
    /// Requests per second of the read APIs' paced run (open loop), beside the saturation run.
    #[arg(long, default_value_t = 100)]
    pub read_rate: u32,
    /// Also stream an audit export of this many entries and measure peak memory (0: skip).
    #[arg(long, default_value_t = 0)]
    pub audit_export: usize,
}

pub fn header() -> String {
    format!(
        "{:<34} {:>7} {:>9} {:>10} {:>9} {:>9} {:>9}\n",
        "workload", "count", "secs", "per sec", "p50 ms", "p95 ms", "p99 ms"
    )
}

#[derive(Debug)]
pub struct Measurement {
    pub name: String,
    pub count: usize,
    pub elapsed: Duration,
    pub latencies: Vec<Duration>,
}

impl Measurement {
    pub fn per_second(&self) -> f64 {
        self.count as f64 / self.elapsed.as_secs_f64()
    }

    /// The `p`-th percentile (0-100) of the latencies, nearest-rank.
    pub fn percentile(&self, p: f64) -> Duration {
        percentile(&self.latencies, p)
    }

    pub fn line(&self) -> String {
        let latency = |p: f64| {
            if self.latencies.is_empty() {
                "-".to_string()
            } else {
                format!("{:.2}", ms(self.percentile(p)))
            }
        };
        format!(
            "{:<34} {:>7} {:>9.2} {:>10.1} {:>9} {:>9} {:>9}\n",
            self.name,
            self.count,
            self.elapsed.as_secs_f64(),
            self.per_second(),
            latency(50.0),
            latency(95.0),
            latency(99.0),
        )
    }
}

pub fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

pub fn percentile(samples: &[Duration], p: f64) -> Duration {
    if samples.is_empty() {
        return Duration::ZERO;
    }
    let mut sorted = samples.to_vec();
    sorted.sort();
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// Runs `op(i)` for i in 0..count on `clients` concurrent tasks; times each call.
pub async fn drive<F, Fut>(
    name: &str,
    clients: usize,
    count: usize,
    op: F,
) -> anyhow::Result<Measurement>
where
    F: Fn(usize) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = anyhow::Result<()>> + Send,
{
    let op = Arc::new(op);
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let tasks: Vec<_> = (0..clients)
        .map(|_| {
            let (op, next) = (op.clone(), next.clone());
            tokio::spawn(async move {
                let mut latencies = Vec::new();
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= count {
                        return Ok::<_, anyhow::Error>(latencies);
                    }
                    let t = Instant::now();
                    op(i).await?;
                    latencies.push(t.elapsed());
                }
            })
        })
        .collect();
    let mut latencies = Vec::with_capacity(count);
    for task in tasks {
        latencies.extend(task.await??);
    }
    Ok(Measurement {
        name: name.to_string(),
        count,
        elapsed: started.elapsed(),
        latencies,
    })
}

/// Sends `op(i)` for i in 0..count at `rate` per second, open loop: each call starts when it is
/// due whether or not earlier ones have finished, and its latency counts from when it was due,
/// so time spent queueing behind a slow server is in the figures (no coordinated omission).
pub async fn pace<F, Fut>(name: &str, rate: u32, count: usize, op: F) -> anyhow::Result<Measurement>
where
    F: Fn(usize) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = anyhow::Result<()>> + Send + 'static,
{
    anyhow::ensure!(rate > 0, "the rate must be above 0");
    let interval = Duration::from_secs_f64(1.0 / f64::from(rate));
    let started = tokio::time::Instant::now();
    let mut tasks = Vec::with_capacity(count);
    for i in 0..count {
        let due = started + interval.mul_f64(i as f64);
        tokio::time::sleep_until(due).await;
        let call = op(i);
        tasks.push(tokio::spawn(async move {
            call.await?;
            Ok::<_, anyhow::Error>(due.elapsed())
        }));
    }
    let mut latencies = Vec::with_capacity(count);
    for task in tasks {
        latencies.push(task.await??);
    }
    Ok(Measurement {
        name: name.to_string(),
        count,
        elapsed: started.elapsed(),
        latencies,
    })
}

/// Settings for a fresh database of its own, on the configured server, a free port, and topics
/// and consumer groups of its own.
pub(crate) fn fresh(settings: &Settings, clients: usize) -> (Settings, String) {
    let mut settings = settings.clone();
    let base = settings.database.url.expose_secret().to_string();
    let server = base
        .rsplit_once('/')
        .map_or(base.as_str(), |(s, _)| s)
        .to_string();
    let db_url = format!("{server}/answers_bench_{}", uuid::Uuid::new_v4().simple());
    settings.database.url = db_url.clone().into();
    settings.database.create_if_missing = true;
    settings.database.migrate_on_start = true;
    settings.database.max_connections = settings.database.max_connections.max(clients as u32 + 4);
    settings.server.port = 0;
    settings.kafka.topic_prefix =
        format!("bench{}", &uuid::Uuid::new_v4().simple().to_string()[..8]);
    settings.kafka.consumer_group = settings.kafka.topic_prefix.clone();
    (settings, db_url)
}

pub async fn run(settings: Settings, args: BenchArgs) -> anyhow::Result<()> {
    anyhow::ensure!(
        args.clients > 0 && args.commands > 0,
        "--clients and --commands must be positive"
    );
    let (mut commands_settings, db_url) = fresh(&settings, args.clients);
    // The command workloads measure the command path alone.
    commands_settings.kafka.enabled = false;
    let result = bench(commands_settings, &args, &db_url).await;
    // Leave nothing behind, whatever happened.
    let _ = Postgres::force_drop_database(&db_url).await;
    result?;
    if args.streaming {
        crate::bench_streaming::run(&settings, &args, fresh).await?;
    }
    if args.kapa {
        let report = crate::bench_kapa::run(&settings, args.commands, fresh).await?;
        write_stdout(&report)?;
    }
    if args.read_events > 0 {
        let report = crate::bench_reads::run(&settings, &args, fresh).await?;
        write_stdout(&report)?;
    }
    if args.audit_export > 0 {
        let report = crate::bench_audit::run(&settings, args.audit_export, fresh).await?;
        write_stdout(&report)?;
    }
    Ok(())
}

async fn bench(settings: Settings, args: &BenchArgs, db_url: &str) -> anyhow::Result<()> {
    let keys = JwtKeys::new(&settings.auth)?;
    // The benchmark measures the service, not its rate limits (which would refuse the load).
    let mut settings = settings;
    settings.rate_limits.enabled = false;
    let base = settings.clone();
    let app = Application::build(settings).await?;
    let address = format!("http://127.0.0.1:{}", app.port());
    let tenant_pool = app.tenant_pool().clone();
    tokio::spawn(app.run_until_stopped());

    let token = keys.mint("bench-admin", "bench", Role::Admin, 3600)?;
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(args.clients)
        .build()?;
    let created = client
        .post(format!("{address}/v1/tenant"))
        .bearer_auth(&token)
        .json(&json!({"name": "Bench"}))
        .send()
        .await?;
    anyhow::ensure!(
        created.status().as_u16() == 201,
        "could not create the bench tenant: {}",
        created.status()
    );

    let post = |path: &'static str, body: fn(usize) -> serde_json::Value| {
        let (client, address, token) = (client.clone(), address.clone(), token.clone());
        move |i: usize| {
            let request = client
                .post(format!("{address}{path}"))
                .bearer_auth(&token)
                .json(&body(i));
            async move {
                let response = request.send().await?;
                anyhow::ensure!(
                    response.status().as_u16() == 201,
                    "{path} answered {}",
                    response.status()
                );
                Ok(())
            }
        }
    };
    // The service runs in this process: its resident memory (with the clients') under load.
    let rss = crate::memory::RssSampler::start();
    let ask = drive(
        "ask a question (2 events)",
        args.clients,
        args.commands,
        post(
            "/v1/conversations",
            |i| json!({"question": format!("How do I configure feature {i}?")}),
        ),
    )
    .await?;
    let add = drive(
        "add a knowledge source (1 event)",
        args.clients,
        args.commands,
        post("/v1/sources", |i| {
            json!({"kind": "docs", "name": format!("Docs {i}"), "location": format!("https://docs{i}.example.test")})
        }),
    )
    .await?;

    let load_rss = rss.peak();
    drop(rss);
    // The ceiling: the same Postgres, an identical table without our code in front of it.
    let pool = PgPoolOptions::new()
        .max_connections(args.clients as u32)
        .connect(db_url)
        .await?;
    sqlx::query("CREATE TABLE bench_events (LIKE events INCLUDING ALL)")
        .execute(&pool)
        .await?;
    let insert_pool = pool.clone();
    let tenant: domain::TenantId = "bench".parse()?;
    // The same event the command writes (the domain's types, serialised the same way), as one
    // plain row: the ceiling is what Postgres does with no code of ours in front of it.
    let ceiling = drive(
        "ceiling: INSERT + COMMIT of one row",
        args.clients,
        args.commands,
        move |i| {
            let (pool, tenant) = (insert_pool.clone(), tenant.clone());
            async move {
                let id = tenant.scope(uuid::Uuid::now_v7()).to_string();
                let event = domain::knowledge_source::SourceEvent::SourceAdded {
                    kind: domain::knowledge_source::SourceKind::Docs,
                    name: format!("Docs {i}"),
                    location: "https://docs.example.test".into(),
                    settings: Default::default(),
                };
                let e = crate::events::serialized::<domain::knowledge_source::KnowledgeSource>(
                    &id,
                    1,
                    &event,
                    &tenant,
                    "bench-admin",
                    i.to_string(),
                )?;
                sqlx::query(
                "INSERT INTO bench_events (aggregate_type, aggregate_id, sequence, event_type, \
                   event_version, payload, metadata, event_id, tenant_id, actor_id, actor_role, \
                   correlation_id) \
                 VALUES ($1, $2, 1, $3, $4, $5, $6, $7, 'bench', 'bench-admin', 'admin', $8)",
            )
            .bind(&e.aggregate_type)
            .bind(&e.aggregate_id)
            .bind(&e.event_type)
            .bind(&e.event_version)
            .bind(&e.payload)
            .bind(&e.metadata)
            .bind(uuid::Uuid::now_v7())
            .bind(i.to_string())
            .execute(&pool)
            .await?;
                Ok(())
            }
        },
    )
    .await?;

    let (ours, postgres_es) =
        crate::bench_store::compare(&pool, &tenant_pool, args.clients, args.commands).await?;

    let mut report = format!(
        "answers bench: {} clients, {} commands per workload, {} cores\n\n{}",
        args.clients,
        args.commands,
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        header()
    );
    for m in [&ask, &add, &ceiling] {
        report.push_str(&m.line());
    }
    report.push_str(&format!(
        "\nratio to the ceiling: ask {:.1}%, add source {:.1}%\n",
        100.0 * ask.per_second() / ceiling.per_second(),
        100.0 * add.per_second() / ceiling.per_second(),
    ));
    report.push_str(&format!(
        "\nevent store against cqrs-es's postgres-es (same database, aggregate, events, {} clients)\n{}{}{}\
         ours / postgres-es: {:.1}% of the appends per second, p99 {:.2} ms against {:.2} ms\n\n",
        args.clients,
        header(),
        ours.line(),
        postgres_es.line(),
        100.0 * ours.per_second() / postgres_es.per_second(),
        ms(ours.percentile(99.0)),
        ms(postgres_es.percentile(99.0)),
    ));
    report.push_str(&format!(
        "peak RSS of this process (service and clients) under the {}-client command load: {}\n",
        args.clients,
        load_rss.map_or("unknown".into(), |m| format!("{m:.0} MiB"))
    ));
    // Out now: the sections below start more services and pools, which a high --clients can
    // take past the server's connection limit.
    write_stdout(&report)?;
    report.clear();
    let post_source = post(
        "/v1/sources",
        |i| json!({"kind": "docs", "name": format!("RLS docs {i}"), "location": format!("https://rls{i}.example.test")}),
    );
    report
        .push_str(&row_level_security(&pool, args, &client, &address, &token, post_source).await?);
    report.push_str(&instrumentation(base, args, &client, &address, &token).await?);
    write_stdout(&report)
}

/// Whether the benchmark's spans go to the OpenTelemetry layer (switched between runs).
static TRACING: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// A trace exporter that counts and drops: the cost measured is the service's (span creation,
/// the OpenTelemetry layer, the batch processor), not a collector's network.
#[derive(Debug)]
struct CountingExporter(Arc<std::sync::atomic::AtomicU64>);

impl opentelemetry_sdk::trace::SpanExporter for CountingExporter {
    async fn export(
        &self,
        batch: Vec<opentelemetry_sdk::trace::SpanData>,
    ) -> opentelemetry_sdk::error::OTelSdkResult {
        self.0
            .fetch_add(batch.len() as u64, std::sync::atomic::Ordering::Relaxed);
        Ok(())
    }
}

/// The service's OpenTelemetry layer, as `tracing.exporter = "otlp"` installs it (batch
/// processor, every trace sampled), switched by [`TRACING`]. Returns the spans-exported count.
fn install_tracing() -> Option<(
    opentelemetry_sdk::trace::SdkTracerProvider,
    Arc<std::sync::atomic::AtomicU64>,
)> {
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    use tracing_subscriber::Layer;
    let exported = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let provider = opentelemetry_sdk::trace::SdkTracerProvider::builder()
        .with_batch_exporter(CountingExporter(exported.clone()))
        .build();
    let layer = answers_api::telemetry::trace_layer(&provider).with_filter(
        tracing_subscriber::filter::dynamic_filter_fn(|_, _| {
            TRACING.load(std::sync::atomic::Ordering::Relaxed)
        }),
    );
    tracing_subscriber::registry()
        .with(layer)
        .try_init()
        .ok()
        .map(|()| (provider, exported))
}

/// Commands with metrics and tracing on and off, side by side: a second instance of the
/// service on the same database with `metrics.enabled = false`, driven on, off, on again like
/// the RLS runs, with the process's spans exported (on) or not (off).
async fn instrumentation(
    mut settings: Settings,
    args: &BenchArgs,
    client: &reqwest::Client,
    on_address: &str,
    token: &str,
) -> anyhow::Result<String> {
    settings.metrics.enabled = false;
    settings.server.port = 0;
    let off = Application::build(settings).await?;
    let off_address = format!("http://127.0.0.1:{}", off.port());
    tokio::spawn(off.run_until_stopped());
    let add = |address: String| {
        let (client, token) = (client.clone(), token.to_string());
        move |i: usize| {
            let request = client
                .post(format!("{address}/v1/sources"))
                .bearer_auth(&token)
                .json(&json!({"kind": "docs", "name": format!("Metrics docs {i}"),
                    "location": format!("https://m{i}.example.test")}));
            async move {
                let response = request.send().await?;
                anyhow::ensure!(
                    response.status().as_u16() == 201,
                    "/v1/sources answered {}",
                    response.status()
                );
                Ok(())
            }
        }
    };
    let tracing = install_tracing();
    let mut out = format!(
        "\ninstrumentation, side by side (metrics and tracing on / off)\n\n{}",
        header()
    );
    let mut on = Vec::new();
    let mut off_rate = 0.0;
    for (label, address) in [
        ("on", on_address.to_string()),
        ("off", off_address.clone()),
        ("on again", on_address.to_string()),
    ] {
        TRACING.store(label != "off", std::sync::atomic::Ordering::Relaxed);
        let m = drive(
            &format!("add a source, metrics+tracing {label}"),
            args.clients,
            args.commands,
            add(address),
        )
        .await?;
        out.push_str(&m.line());
        if label == "off" {
            off_rate = m.per_second();
        } else {
            on.push(m.per_second());
        }
    }
    TRACING.store(false, std::sync::atomic::Ordering::Relaxed);
    let on_rate = on.iter().sum::<f64>() / on.len() as f64;
    out.push_str(&format!(
        "\nmetrics and tracing on / off: {:.1}% of the throughput\n",
        100.0 * on_rate / off_rate
    ));
    match tracing {
        Some((provider, exported)) => {
            let _ = provider.force_flush();
            out.push_str(&format!(
                "spans exported while on: {}\n",
                exported.load(std::sync::atomic::Ordering::Relaxed)
            ));
        }
        None => out.push_str("(tracing not measured: a subscriber was already installed)\n"),
    }
    Ok(out)
}

/// Commands and reads with row-level security on, off, and on again (the order would otherwise
/// favour one side: the tables grow as the runs go). Switched by the owner with `ALTER TABLE
/// .. ENABLE/DISABLE ROW LEVEL SECURITY` on every tenant table of the running service; the
/// per-transaction tenant setting is sent either way, so the difference is the policies' cost.
async fn row_level_security<F, Fut>(
    owner: &sqlx::PgPool,
    args: &BenchArgs,
    client: &reqwest::Client,
    address: &str,
    token: &str,
    add_source: F,
) -> anyhow::Result<String>
where
    F: Fn(usize) -> Fut + Clone + Send + Sync + 'static,
    Fut: std::future::Future<Output = anyhow::Result<()>> + Send,
{
    // A read model of two tenants, 20,000 conversations each, for the reads to page through.
    sqlx::query(
        "INSERT INTO rm_conversations (tenant_id, conversation_id, status, started_by, channel,
           last_question, created_at, updated_at, version, last_position, document)
         SELECT t, gen_random_uuid(), 'open', 'u', 'web', 'q', now() - g * interval '1 second',
                now() - g * interval '1 second', 1, g, '{\"questions\": []}'
           FROM generate_series(1, 20000) g, unnest(ARRAY['bench', 'bench-other']) t",
    )
    .execute(owner)
    .await?;
    sqlx::query("ANALYZE rm_conversations")
        .execute(owner)
        .await?;
    let tables: Vec<String> = sqlx::query_scalar(
        "SELECT relname::text FROM pg_class
          WHERE relnamespace = 'public'::regnamespace AND relrowsecurity",
    )
    .fetch_all(owner)
    .await?;
    let read = {
        let (client, address, token) = (client.clone(), address.to_string(), token.to_string());
        move |_: usize| {
            let request = client
                .get(format!("{address}/v1/conversations?limit=20"))
                .bearer_auth(&token);
            async move {
                let response = request.send().await?;
                anyhow::ensure!(
                    response.status().as_u16() == 200,
                    "GET /v1/conversations answered {}",
                    response.status()
                );
                let page: serde_json::Value = response.json().await?;
                anyhow::ensure!(page["items"].as_array().map(Vec::len) == Some(20));
                Ok(())
            }
        }
    };
    let mut out = format!(
        "\nrow-level security, side by side ({} tenant tables switched by the owner)\n\n{}",
        tables.len(),
        header()
    );
    let mut figures = Vec::new();
    for (label, on) in [("on", true), ("off", false), ("on again", true)] {
        for table in &tables {
            let switch = if on { "ENABLE" } else { "DISABLE" };
            sqlx::query(&format!("ALTER TABLE {table} {switch} ROW LEVEL SECURITY"))
                .execute(owner)
                .await?;
        }
        let commands = drive(
            &format!("add a source, RLS {label}"),
            args.clients,
            args.commands,
            add_source.clone(),
        )
        .await?;
        let reads = drive(
            &format!("list conversations, RLS {label}"),
            args.clients,
            args.commands,
            read.clone(),
        )
        .await?;
        out.push_str(&commands.line());
        out.push_str(&reads.line());
        figures.push((on, commands.per_second(), ms(reads.percentile(99.0))));
    }
    let mean = |on: bool, pick: fn(&(bool, f64, f64)) -> f64| {
        let picked: Vec<f64> = figures.iter().filter(|f| f.0 == on).map(pick).collect();
        picked.iter().sum::<f64>() / picked.len() as f64
    };
    out.push_str(&format!(
        "\nRLS on / off: commands {:.1}% of the throughput, read p99 {:.2} ms vs {:.2} ms\n",
        100.0 * mean(true, |f| f.1) / mean(false, |f| f.1),
        mean(true, |f| f.2),
        mean(false, |f| f.2),
    ));
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles() {
        let samples: Vec<Duration> = (1..=100).map(Duration::from_millis).collect();
        assert_eq!(percentile(&samples, 50.0), Duration::from_millis(50));
        assert_eq!(percentile(&samples, 99.0), Duration::from_millis(99));
        assert_eq!(percentile(&samples, 100.0), Duration::from_millis(100));
        assert_eq!(percentile(&[], 50.0), Duration::ZERO);
    }
}
