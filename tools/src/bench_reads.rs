//! `answers bench --read-events N`: the read APIs over a large store. N events of ten tenants
//! (a quarter as many conversations, each asked, answered, rated and resolved) are written
//! through the event store, every projection is rebuilt from them, and a service on that
//! database answers the conversation list, one conversation, the 30-day analytics (computed,
//! and through the read cache) and audit pages at 16 clients, closed loop (the service at
//! saturation: throughput), then again at a stated rate, open loop (`--read-rate`: latency at a
//! load the service carries, which is what a p99 target means). Beside them, the ceiling of a
//! read over HTTP: `/health/live`, the same server and client with no database behind it.
//! Prints the peak resident memory of the rebuild too.
use std::sync::Arc;
use std::time::Instant;

use domain::Role;
use secrecy::ExposeSecret;
use serde_json::json;
use sqlx::migrate::MigrateDatabase;
use sqlx::postgres::PgPoolOptions;
use sqlx::Postgres;

use crate::bench::{drive, header, ms, pace, BenchArgs, Measurement};
use crate::memory::RssSampler;
use answers_api::auth::JwtKeys;
use answers_api::{Application, Settings};

type Fresh = fn(&Settings, usize) -> (Settings, String);

const TENANTS: usize = 10;
const CLIENTS: usize = 16;
/// The target for the read APIs.
const TARGET_P99_MS: f64 = 20.0;

pub async fn run(settings: &Settings, args: &BenchArgs, fresh: Fresh) -> anyhow::Result<String> {
    let (mut settings, db_url) = fresh(settings, CLIENTS);
    settings.kafka.enabled = false;
    settings.embedded.enabled = false;
    settings.rate_limits.enabled = false;
    // To read the read cache's counters from `/metrics`.
    let operator = format!("bench-{}", uuid::Uuid::new_v4().simple());
    settings.platform.operator_token = Some(operator.clone().into());
    let result = reads(settings, args, &operator).await;
    let _ = Postgres::force_drop_database(&db_url).await;
    result
}

async fn reads(settings: Settings, args: &BenchArgs, operator: &str) -> anyhow::Result<String> {
    // The schema first (the service migrates on start; so does this).
    let url = settings.database.url.expose_secret();
    if !Postgres::database_exists(url).await? {
        Postgres::create_database(url).await?;
    }
    let pool = PgPoolOptions::new().max_connections(4).connect(url).await?;
    event_store::migrate(&pool).await?;
    let tenants: Vec<domain::TenantId> = (0..TENANTS)
        .map(|t| format!("reads{t}").parse())
        .collect::<Result<_, _>>()?;
    let per_tenant = (args.read_events / 4 / TENANTS).max(1);
    let started = Instant::now();
    for tenant in &tenants {
        crate::events::append_conversations(&pool, tenant, per_tenant).await?;
    }
    let seeded = started.elapsed();
    let rss = RssSampler::start();
    let started = Instant::now();
    let mut rebuilt = Vec::new();
    for projection in projections::all() {
        let report = projections::rebuild(&pool, projection.as_ref()).await?;
        rebuilt.push(format!("{} {:.1}s", report.projection, report.seconds));
    }
    let rebuild_secs = started.elapsed().as_secs_f64();
    let rebuild_rss = rss.peak();
    drop(rss);
    pool.close().await;

    let keys = JwtKeys::new(&settings.auth)?;
    let mut uncached_settings = settings.clone();
    uncached_settings.read_cache.enabled = false;
    let cached = serve(settings).await?;
    let uncached = serve(uncached_settings).await?;
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(CLIENTS)
        .build()?;
    // Each tenant exists (its creation is one more event) and has a viewer and an admin.
    let mut viewers = Vec::new();
    let mut admins = Vec::new();
    for tenant in &tenants {
        let admin = keys.mint("reads-admin", tenant.as_str(), Role::Admin, 3600)?;
        let created = client
            .post(format!("{cached}/v1/tenant"))
            .bearer_auth(&admin)
            .json(&json!({"name": tenant.as_str()}))
            .send()
            .await?;
        anyhow::ensure!(
            created.status().as_u16() == 201,
            "could not create {tenant}: {}",
            created.status()
        );
        viewers.push(keys.mint("reads-viewer", tenant.as_str(), Role::Viewer, 3600)?);
        admins.push(admin);
    }
    let (viewers, admins) = (Arc::new(viewers), Arc::new(admins));
    let count = args.commands;
    let get = |name: &str,
               base: &str,
               path: Arc<dyn Fn(usize) -> String + Send + Sync>,
               tokens: &Arc<Vec<String>>| {
        let op = read_op(&client, base, path, tokens);
        let name = name.to_string();
        async move { drive(&name, CLIENTS, count, op).await }
    };
    let fixed = |path: &'static str| -> Arc<dyn Fn(usize) -> String + Send + Sync> {
        Arc::new(move |_| path.to_string())
    };
    // The bulk writer's conversation ids (`tenant/uuid`, the uuid from the index), spread.
    let conversation: Arc<dyn Fn(usize) -> String + Send + Sync> = Arc::new(move |i| {
        format!(
            "/v1/conversations/{}",
            uuid::Uuid::from_u128(0xc0 << 64 | ((i * 7919) % per_tenant) as u128)
        )
    });
    let list = get(
        "GET /v1/conversations (20)",
        &uncached,
        fixed("/v1/conversations?limit=20"),
        &viewers,
    )
    .await?;
    let conversation_path = conversation.clone();
    let one = get(
        "GET /v1/conversations/{id}",
        &uncached,
        conversation,
        &viewers,
    )
    .await?;
    let analytics = get(
        "GET /v1/analytics 30d, computed",
        &uncached,
        fixed("/v1/analytics?range=30d"),
        &viewers,
    )
    .await?;
    let analytics_cached = get(
        "GET /v1/analytics 30d, read cache",
        &cached,
        fixed("/v1/analytics?range=30d"),
        &viewers,
    )
    .await?;
    let audit = get(
        "GET /v1/audit (50)",
        &uncached,
        fixed("/v1/audit?limit=50"),
        &admins,
    )
    .await?;
    let ceiling = {
        let (client, base) = (client.clone(), uncached.clone());
        drive("ceiling: GET /health/live", CLIENTS, count, move |_| {
            let request = client.get(format!("{base}/health/live"));
            async move {
                request.send().await?.bytes().await?;
                Ok(())
            }
        })
        .await?
    };
    // The same routes at a stated rate, open loop. The computed analytics are left out: at over a
    // second each they cannot be paced at this rate on two cores (the saturation run says so).
    let rate = args.read_rate;
    let paced_count = count.min(rate as usize * 20).max(1);
    let paced = |name: &str,
                 base: &str,
                 path: Arc<dyn Fn(usize) -> String + Send + Sync>,
                 tokens: &Arc<Vec<String>>| {
        let op = read_op(&client, base, path, tokens);
        let name = format!("{name} @{rate}/s");
        async move { pace(&name, rate, paced_count, op).await }
    };
    let paced_runs = vec![
        paced(
            "GET /v1/conversations (20)",
            &uncached,
            fixed("/v1/conversations?limit=20"),
            &viewers,
        )
        .await?,
        paced(
            "GET /v1/conversations/{id}",
            &uncached,
            conversation_path.clone(),
            &viewers,
        )
        .await?,
        paced(
            "GET /v1/analytics 30d, warm",
            &cached,
            fixed("/v1/analytics?range=30d"),
            &viewers,
        )
        .await?,
        paced(
            "GET /v1/audit (50)",
            &uncached,
            fixed("/v1/audit?limit=50"),
            &admins,
        )
        .await?,
    ];
    let metrics = client
        .get(format!("{cached}/metrics"))
        .bearer_auth(operator)
        .send()
        .await?
        .text()
        .await?;
    let hit_rate = hit_rate(&metrics);

    let mut out = format!(
        "\nread APIs over {} stored events of {TENANTS} tenants ({} conversations each, written in \
         {:.1}s; every projection rebuilt in {rebuild_secs:.1}s: {}), {CLIENTS} clients\n\n{}",
        per_tenant * 4 * TENANTS + TENANTS,
        per_tenant,
        seeded.as_secs_f64(),
        rebuilt.join(", "),
        header()
    );
    let measured: [&Measurement; 6] =
        [&list, &one, &analytics, &analytics_cached, &audit, &ceiling];
    for m in measured {
        out.push_str(&m.line());
    }
    out.push_str(&format!(
        "\nthe same routes at {rate} requests/s, open loop (latency from when each was due)\n"
    ));
    for m in &paced_runs {
        out.push_str(&m.line());
    }
    out.push('\n');
    for m in measured[..5].iter().copied().chain(paced_runs.iter()) {
        let p99 = ms(m.percentile(99.0));
        out.push_str(&format!(
            "{:<34} p99 {p99:.1} ms: target {TARGET_P99_MS} ms {}; {:.1}x the ceiling's p99\n",
            m.name,
            if p99 <= TARGET_P99_MS {
                "met"
            } else {
                "NOT met"
            },
            p99 / ms(ceiling.percentile(99.0)).max(0.001)
        ));
    }
    out.push_str(&format!(
        "read cache hit rate (analytics, cached run): {}\npeak RSS of this process during the rebuild: {}\n",
        hit_rate.map_or("unknown".into(), |r| format!("{:.1}%", 100.0 * r)),
        rebuild_rss.map_or("unknown".into(), |m| format!("{m:.0} MiB"))
    ));
    Ok(out)
}

/// A GET of `path(i)` as tenant `i % TENANTS`'s reader, which must succeed and is read in full.
fn read_op(
    client: &reqwest::Client,
    base: &str,
    path: Arc<dyn Fn(usize) -> String + Send + Sync>,
    tokens: &Arc<Vec<String>>,
) -> impl Fn(usize) -> std::pin::Pin<Box<dyn std::future::Future<Output = anyhow::Result<()>> + Send>>
       + Send
       + Sync
       + 'static {
    let (client, base, tokens) = (client.clone(), base.to_string(), tokens.clone());
    move |i| {
        let request = client
            .get(format!("{base}{}", path(i)))
            .bearer_auth(&tokens[i % TENANTS]);
        Box::pin(async move {
            let response = request.send().await?;
            anyhow::ensure!(
                response.status().is_success(),
                "{} answered {}",
                response.url().path(),
                response.status()
            );
            response.bytes().await?;
            Ok(())
        })
    }
}

/// hit / (hit + miss + error) of the analytics view, from a `/metrics` text.
fn hit_rate(metrics: &str) -> Option<f64> {
    let value = |result: &str| {
        answers_api::metrics::metric_value(
            metrics,
            "answers_read_cache_lookups_total",
            &[("view", "analytics"), ("result", result)],
        )
        .unwrap_or(0.0)
    };
    let (hit, all) = (value("hit"), value("hit") + value("miss") + value("error"));
    (all > 0.0).then(|| hit / all)
}

/// A service on `settings`' database, in this process; its address.
async fn serve(mut settings: Settings) -> anyhow::Result<String> {
    settings.server.port = 0;
    let app = Application::build(settings).await?;
    let address = format!("http://127.0.0.1:{}", app.port());
    tokio::spawn(app.run_until_stopped());
    Ok(address)
}
