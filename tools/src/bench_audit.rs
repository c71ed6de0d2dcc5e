//! `answers bench --audit-export N`: stream an export of N audit entries over HTTP and measure
//! the process's peak memory growth against the size of what was streamed. Bounded memory
//! means the growth stays far below the body size, whatever N.
use std::time::Instant;

use domain::Role;
use sqlx::migrate::MigrateDatabase;
use sqlx::Postgres;

use answers_api::auth::JwtKeys;
use answers_api::{Application, Settings};

type Fresh = fn(&Settings, usize) -> (Settings, String);

/// Resident set size and its peak since the last reset, in bytes (Linux).
fn memory() -> (u64, u64) {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|kb| kb.parse::<u64>().ok())
            .map_or(0, |kb| kb * 1024)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

/// Resets the peak RSS to the current RSS (Linux `clear_refs` 5).
fn reset_peak() {
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}

pub async fn run(settings: &Settings, entries: usize, fresh: Fresh) -> anyhow::Result<String> {
    let (mut s, db) = fresh(settings, 4);
    s.kafka.enabled = false;
    let result = export(s, entries).await;
    let _ = Postgres::force_drop_database(&db).await;
    result
}

async fn export(settings: Settings, entries: usize) -> anyhow::Result<String> {
    let keys = JwtKeys::new(&settings.auth)?;
    // The benchmark measures the service, not its rate limits (which would refuse the load).
    let mut settings = settings;
    settings.rate_limits.enabled = false;
    let app = Application::build(settings).await?;
    let address = format!("http://127.0.0.1:{}", app.port());
    let pool = app.pool().clone();
    tokio::spawn(app.run_until_stopped());
    sqlx::query(
        "INSERT INTO rm_audit (event_id, tenant_id, position, recorded_at, actor_id, actor_role, action, \
           object_type, object_id, sequence, correlation_id, outcome, details) \
         SELECT gen_random_uuid(), 'bench', g, now() - (g || ' seconds')::interval, 'user' || (g % 50), 'operator', \
           'QuestionAsked', 'conversation', md5(g::text)::uuid::text, 1, 'corr-' || g, 'succeeded', \
           jsonb_build_object('text', 'How do I configure feature ' || g || ', with options?', 'channel', 'web') \
         FROM generate_series(1, $1) g",
    )
    .bind(entries as i64)
    .execute(&pool)
    .await?;
    // As autovacuum would have by now on a live table: without statistics the planner scans
    // the whole table for every page.
    sqlx::query("ANALYZE rm_audit").execute(&pool).await?;
    let token = keys.mint("bench-admin", "bench", Role::Admin, 3600)?;
    let client = reqwest::Client::new();
    let mut out = format!(
        "\naudit export of {entries} entries, streamed over HTTP (server and client in this process)\n\n{:<8} {:>8} {:>12} {:>8} {:>12} {:>16} {:>10}\n",
        "format", "entries", "bytes", "secs", "entries/s", "peak RSS +MiB", "of body"
    );
    for format in ["ndjson", "csv"] {
        let (rss_before, _) = memory();
        reset_peak();
        let started = Instant::now();
        let mut response = client
            .get(format!("{address}/v1/audit/export?format={format}"))
            .bearer_auth(&token)
            .send()
            .await?
            .error_for_status()?;
        let (mut bytes, mut lines) = (0usize, 0usize);
        while let Some(chunk) = response.chunk().await? {
            bytes += chunk.len();
            lines += chunk.iter().filter(|&&b| b == b'\n').count();
        }
        let secs = started.elapsed().as_secs_f64();
        let (_, peak) = memory();
        let rows = if format == "csv" { lines - 1 } else { lines };
        anyhow::ensure!(
            rows == entries,
            "{format}: streamed {rows} of {entries} entries"
        );
        let growth = peak.saturating_sub(rss_before);
        out.push_str(&format!(
            "{:<8} {:>8} {:>12} {:>8.2} {:>12.0} {:>16.1} {:>9.1}%\n",
            format,
            rows,
            bytes,
            secs,
            rows as f64 / secs,
            growth as f64 / (1024.0 * 1024.0),
            100.0 * growth as f64 / bytes as f64
        ));
    }
    Ok(out)
}
