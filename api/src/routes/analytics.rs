//! Per-tenant analytics (any role): volume and trends, outcomes, feedback, funnel, intents and
//! topics, coverage gaps, sources, and cost allocation.
use actix_web::{get, web, HttpResponse};
use chrono::{DateTime, Duration, DurationRound, Utc};
use domain::Code;
use event_store::TenantPool;
use projections::analytics::{self, Analytics, CostRow, Window};
use serde::Deserialize;
use sqlx::PgConnection;

use super::{end_read, snapshot_tx};
use utoipa::IntoParams;

use crate::auth::Authenticated;
use crate::dto::Moment;
use crate::problem::ApiError;
use crate::read_cache::{Flight, ReadCache, View};
use crate::routes::conversations::read_error;
use crate::routes::{parse_word, CommandProblems};

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(overview).service(cost);
}

domain::text_enum! {
    /// The ranges ending now.
    pub enum RangeWord {
        Day = "24h",
        Week = "7d",
        Month = "30d",
    }
}

domain::text_enum! {
    /// The bucket sizes.
    pub enum BucketWord {
        Hour = "hour",
        Day = "day",
        Week = "week",
    }
}

domain::text_enum! {
    /// The cost report formats.
    pub enum CostFormat {
        Json = "json",
        Csv = "csv",
    }
}

#[derive(Debug, Deserialize, IntoParams)]
pub struct WindowQuery {
    /// `24h`, `7d` (default) or `30d`, ending at the end of the current minute; ignored when
    /// `from` is given.
    #[param(value_type = Option<RangeWord>, inline)]
    pub range: Option<String>,
    /// Custom window start (RFC 3339, inclusive).
    #[param(value_type = Option<Moment>, inline)]
    pub from: Option<Moment>,
    /// Custom window end (RFC 3339, exclusive; default: the end of the current minute).
    #[param(value_type = Option<Moment>, inline)]
    pub to: Option<Moment>,
    /// `hour`, `day` or `week` (default: hour for 24h, else day).
    #[param(value_type = Option<BucketWord>, inline)]
    pub bucket: Option<String>,
    /// IANA time zone for the buckets (default `UTC`).
    #[param(min_length = 1, max_length = 64, pattern = "^[^\\x00]*$")]
    pub tz: Option<String>,
    /// Cost only: `json` (default) or `csv`.
    #[param(value_type = Option<CostFormat>, inline)]
    pub format: Option<String>,
}

/// The checked window, and the cost report's format (checked on both routes: a word that names
/// no format is refused even where it is not used).
async fn window(
    conn: &mut PgConnection,
    q: &WindowQuery,
) -> Result<(Window, Option<CostFormat>), ApiError> {
    // Ranges end at the end of the current minute: no event is recorded later than now, so the
    // figures are those up to now, and every request of the minute asks the same question (one
    // cached answer serves them all, docs/read-cache.md).
    window_at(conn, q, end_of_minute(Utc::now())).await
}

/// The checked window of `q` with relative ranges ending at `now`.
async fn window_at(
    conn: &mut PgConnection,
    q: &WindowQuery,
    now: DateTime<Utc>,
) -> Result<(Window, Option<CostFormat>), ApiError> {
    let format: Option<CostFormat> = parse_word(q.format.as_deref(), Code::InvalidFormat)?;
    let range: Option<RangeWord> = parse_word(q.range.as_deref(), Code::InvalidRange)?;
    let (from, to, default_bucket) = match (q.from.map(|m| m.0), range) {
        (Some(from), _) => (from, q.to.map_or(now, |m| m.0), BucketWord::Day),
        (None, Some(RangeWord::Day)) => (now - Duration::hours(24), now, BucketWord::Hour),
        (None, None | Some(RangeWord::Week)) => (now - Duration::days(7), now, BucketWord::Day),
        (None, Some(RangeWord::Month)) => (now - Duration::days(30), now, BucketWord::Day),
    };
    if from >= to || to - from > Duration::days(366) {
        return Err(ApiError::new(
            Code::InvalidWindow,
            "`from` must be before `to`, at most 366 days apart",
        ));
    }
    let bucket = parse_word::<BucketWord>(q.bucket.as_deref(), Code::InvalidBucket)?
        .unwrap_or(default_bucket)
        .to_string();
    let tz = q.tz.clone().unwrap_or_else(|| "UTC".to_string());
    if !analytics::valid_time_zone(conn, &tz)
        .await
        .map_err(read_error)?
    {
        return Err(ApiError::new(
            Code::InvalidTimeZone,
            format!("`{tz}` is not an IANA time zone"),
        ));
    }
    Ok((
        Window {
            from,
            to,
            bucket,
            tz,
        },
        format,
    ))
}

fn unserialisable(e: serde_json::Error) -> ApiError {
    ApiError::infrastructure(Code::InternalError, "the answer could not be written", &e)
}

/// The end of `t`'s minute (`t` itself when it is a whole minute).
pub fn end_of_minute(t: DateTime<Utc>) -> DateTime<Utc> {
    let start = t.duration_trunc(Duration::minutes(1)).unwrap_or(t);
    if start == t {
        t
    } else {
        start + Duration::minutes(1)
    }
}

/// The request as the cache's key sees it: the checked window, whatever words asked for it.
fn described(w: &Window, format: Option<CostFormat>) -> String {
    format!(
        "{}|{}|{}|{}|{}",
        w.from.to_rfc3339(),
        w.to.to_rfc3339(),
        w.bucket,
        w.tz,
        format.map_or("json", |f| f.as_str())
    )
}

/// The body of `view` for the window: the analytics as JSON, the cost report as JSON or CSV.
async fn render(
    view: View,
    conn: &mut PgConnection,
    tenant: &domain::TenantId,
    w: &Window,
    format: Option<CostFormat>,
) -> Result<String, ApiError> {
    match view {
        View::Analytics => {
            let result = analytics::compute(conn, tenant, w)
                .await
                .map_err(read_error)?;
            serde_json::to_string(&result).map_err(unserialisable)
        }
        View::Cost => {
            let rows = analytics::cost(conn, tenant, w).await.map_err(read_error)?;
            if format == Some(CostFormat::Csv) {
                let mut body = analytics::COST_CSV_HEADER.to_string();
                for r in &rows {
                    body.push_str(&r.csv_line());
                }
                Ok(body)
            } else {
                serde_json::to_string(&rows).map_err(unserialisable)
            }
        }
    }
}

/// Reads `view` through the cache: the cached body when the read models are still at the
/// versions it was computed from; else the answer of the request already computing that key,
/// if one is (`shared`); else computed here and kept for the next reader. The versions and the
/// computation share the transaction's snapshot.
async fn cached(
    cache: &ReadCache,
    tenants: &TenantPool,
    mut tx: sqlx::Transaction<'static, sqlx::Postgres>,
    tenant: &domain::TenantId,
    view: View,
    w: &Window,
    format: Option<CostFormat>,
) -> Result<(String, &'static str), ApiError> {
    let key = cache
        .key(&mut tx, tenant, view, &described(w, format))
        .await
        .map_err(read_error)?;
    let Some(key) = key else {
        let body = render(view, &mut tx, tenant, w, format).await?;
        end_read(tx);
        return Ok((body, "off"));
    };
    if let Some(body) = cache.get(view, &key).await {
        end_read(tx);
        return Ok((body, "hit"));
    }
    match cache.flight(&key) {
        Flight::Lead(leader) => {
            // A leader of this key may have finished since our lookup: its answer is in Redis.
            if let Some(body) = cache.peek(&key).await {
                end_read(tx);
                leader.publish(&body);
                return Ok((body, "hit"));
            }
            let body = render(view, &mut tx, tenant, w, format).await;
            end_read(tx);
            // On an error the leader is dropped here and its followers compute for themselves.
            let body = body?;
            cache.put(&key, &body).await;
            leader.publish(&body);
            Ok((body, "miss"))
        }
        Flight::Follow(follower) => {
            // The leader computes exactly this key (these versions): its answer is ours. The
            // connection goes back to the pool while we wait.
            end_read(tx);
            if let Some(body) = follower.answer().await {
                return Ok((body, "shared"));
            }
            let mut tx = snapshot_tx(tenants, tenant).await?;
            let body = render(view, &mut tx, tenant, w, format).await?;
            end_read(tx);
            Ok((body, "miss"))
        }
    }
}

/// A relative-range dashboard query read lately, by tenant: what the pre-warmer computes for
/// the next minute. Its words were checked by the request that read it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct HotQuery {
    tenant: domain::TenantId,
    view: View,
    range: Option<String>,
    bucket: Option<String>,
    tz: Option<String>,
    format: Option<String>,
}

/// The relative-range queries read in the last ten minutes (at most [`HotQueries::CAP`]), when
/// the pre-warmer runs.
pub struct HotQueries {
    on: bool,
    read: std::sync::Mutex<std::collections::HashMap<HotQuery, std::time::Instant>>,
}

impl HotQueries {
    /// More distinct queries than this are not remembered (each costs a computation a minute).
    const CAP: usize = 1000;
    const KEPT_FOR: std::time::Duration = std::time::Duration::from_secs(600);

    /// Remembers queries only when `on` (the read cache and its pre-warmer run).
    pub fn new(on: bool) -> Self {
        Self {
            on,
            read: Default::default(),
        }
    }

    /// Notes a read of `q`, a query `window` accepted; custom windows do not move with the
    /// clock and are not noted.
    pub fn note(&self, tenant: &domain::TenantId, view: View, q: &WindowQuery) {
        if !self.on || q.from.is_some() {
            return;
        }
        let query = HotQuery {
            tenant: tenant.clone(),
            view,
            range: q.range.clone(),
            bucket: q.bucket.clone(),
            tz: q.tz.clone(),
            format: q.format.clone(),
        };
        if let Ok(mut map) = self.read.lock() {
            if map.len() < Self::CAP || map.contains_key(&query) {
                map.insert(query, std::time::Instant::now());
            }
        }
    }

    /// The queries read lately; older ones are forgotten.
    fn recent(&self) -> Vec<HotQuery> {
        let Ok(mut map) = self.read.lock() else {
            return Vec::new();
        };
        map.retain(|_, at| at.elapsed() < Self::KEPT_FOR);
        map.keys().cloned().collect()
    }
}

/// Computes and caches, for each query read lately, its answer for relative ranges ending at
/// `until` (the next minute's end), unless Redis holds it or a request is computing it. An
/// answer is keyed by the versions it was computed from like any other: should an event come
/// before the minute starts, the reader misses it, as it would have anyway. Returns how many
/// answers it computed.
pub async fn prewarm(
    tenants: &TenantPool,
    cache: &ReadCache,
    hot: &HotQueries,
    until: DateTime<Utc>,
) -> usize {
    let mut computed = 0;
    for q in hot.recent() {
        match prewarm_one(tenants, cache, &q, until).await {
            Ok(true) => computed += 1,
            Ok(false) => {}
            Err(error) => {
                tracing::warn!(tenant = %q.tenant, view = q.view.as_str(), error = %error,
                "read cache: could not pre-warm a dashboard")
            }
        }
    }
    computed
}

async fn prewarm_one(
    tenants: &TenantPool,
    cache: &ReadCache,
    q: &HotQuery,
    until: DateTime<Utc>,
) -> Result<bool, ApiError> {
    let mut tx = snapshot_tx(tenants, &q.tenant).await?;
    let query = WindowQuery {
        range: q.range.clone(),
        from: None,
        to: None,
        bucket: q.bucket.clone(),
        tz: q.tz.clone(),
        format: q.format.clone(),
    };
    let (w, format) = window_at(&mut tx, &query, until).await?;
    let Some(key) = cache
        .key(&mut tx, &q.tenant, q.view, &described(&w, format))
        .await
        .map_err(read_error)?
    else {
        return Ok(false);
    };
    if cache.holds(&key).await {
        return Ok(false);
    }
    let Flight::Lead(leader) = cache.flight(&key) else {
        return Ok(false); // a reader is computing it
    };
    let body = render(q.view, &mut tx, &q.tenant, &w, format).await?;
    end_read(tx);
    cache.put(&key, &body).await;
    leader.publish(&body);
    Ok(true)
}

/// Every minute, `lead` before it ends, pre-warms the dashboards read lately for the next
/// minute (docs/read-cache.md).
pub async fn prewarm_every_minute(
    tenants: TenantPool,
    cache: std::sync::Arc<ReadCache>,
    hot: std::sync::Arc<HotQueries>,
    lead: std::time::Duration,
) {
    let lead = Duration::from_std(lead).unwrap_or(Duration::seconds(10));
    loop {
        let now = Utc::now();
        let mut end = end_of_minute(now);
        if end == now {
            end += Duration::minutes(1);
        }
        let at = end - lead;
        if at > now {
            tokio::time::sleep((at - now).to_std().unwrap_or_default()).await;
        }
        let computed = prewarm(&tenants, &cache, &hot, end + Duration::minutes(1)).await;
        tracing::debug!(
            computed,
            "read cache: dashboards pre-warmed for the next minute"
        );
        // Past this minute's end before looking again.
        let left = end - Utc::now();
        tokio::time::sleep(
            left.to_std().unwrap_or_default() + std::time::Duration::from_millis(10),
        )
        .await;
    }
}

/// Every dashboard figure of the caller's tenant for one window.
#[utoipa::path(get, path = "/v1/analytics", tag = "analytics", params(WindowQuery),
    responses((status = 200, body = Analytics, headers(("X-Cache" = String,
        description = "`hit`: served from the read cache; `miss`: computed and cached; `shared`: computed once for this and concurrent identical requests; `off`: no cache")))
        , CommandProblems), security(("bearer" = [])))]
#[get("/analytics")]
pub async fn overview(
    tenants: web::Data<crate::read_pool::ReadPool>,
    cache: web::Data<ReadCache>,
    hot: web::Data<HotQueries>,
    auth: Authenticated,
    query: web::Query<WindowQuery>,
) -> Result<HttpResponse, ApiError> {
    let tenant = &auth.0.tenant_id;
    let mut tx = snapshot_tx(&tenants, tenant).await?;
    let (w, _) = window(&mut tx, &query).await?;
    hot.note(tenant, View::Analytics, &query);
    let (body, cache_result) =
        cached(&cache, &tenants, tx, tenant, View::Analytics, &w, None).await?;
    Ok(HttpResponse::Ok()
        .content_type("application/json")
        .insert_header(("X-Cache", cache_result))
        .body(body))
}

/// Cost allocation per period: questions, engine calls, characters in and out, sync runs.
#[utoipa::path(get, path = "/v1/analytics/cost", tag = "analytics", params(WindowQuery),
    responses((status = 200, description = "JSON, or CSV with format=csv",
        content((Vec<CostRow> = "application/json"), (String = "text/csv")),
        headers(("X-Cache" = String, description = "`hit`, `miss`, `shared` or `off`, as on `/v1/analytics`"))),
        CommandProblems),
    security(("bearer" = [])))]
#[get("/analytics/cost")]
pub async fn cost(
    tenants: web::Data<crate::read_pool::ReadPool>,
    cache: web::Data<ReadCache>,
    hot: web::Data<HotQueries>,
    auth: Authenticated,
    query: web::Query<WindowQuery>,
) -> Result<HttpResponse, ApiError> {
    let tenant = &auth.0.tenant_id;
    let mut tx = snapshot_tx(&tenants, tenant).await?;
    let (w, format) = window(&mut tx, &query).await?;
    let csv = format == Some(CostFormat::Csv);
    hot.note(tenant, View::Cost, &query);
    let (body, cache_result) = cached(&cache, &tenants, tx, tenant, View::Cost, &w, format).await?;
    Ok(HttpResponse::Ok()
        .content_type(if csv {
            "text/csv; charset=utf-8"
        } else {
            "application/json"
        })
        .insert_header(("X-Cache", cache_result))
        .body(body))
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn ranges_end_at_the_end_of_the_current_minute() {
        let at = |h, m, s, ms| {
            Utc.with_ymd_and_hms(2026, 11, 26, h, m, s).unwrap() + Duration::milliseconds(ms)
        };
        assert_eq!(end_of_minute(at(19, 21, 7, 250)), at(19, 22, 0, 0));
        assert_eq!(end_of_minute(at(19, 59, 59, 999)), at(20, 0, 0, 0));
        assert_eq!(end_of_minute(at(19, 22, 0, 0)), at(19, 22, 0, 0));
    }
}
