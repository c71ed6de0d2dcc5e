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
use crate::read_cache::{ReadCache, View};
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
    let now = end_of_minute(Utc::now());
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
fn end_of_minute(t: DateTime<Utc>) -> DateTime<Utc> {
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

/// Reads `view` through the cache: the cached body when the read models are still at the
/// versions it was computed from, else `compute`'s answer (kept for the next reader). The
/// versions and the computation share the transaction's snapshot.
async fn cached<F>(
    cache: &ReadCache,
    tx: &mut sqlx::Transaction<'static, sqlx::Postgres>,
    tenant: &domain::TenantId,
    view: View,
    query: String,
    compute: F,
) -> Result<(String, &'static str), ApiError>
where
    F: AsyncFnOnce(&mut PgConnection) -> Result<String, ApiError>,
{
    let key = cache
        .key(tx, tenant, view, &query)
        .await
        .map_err(read_error)?;
    if let Some(key) = &key {
        if let Some(body) = cache.get(view, key).await {
            return Ok((body, "hit"));
        }
    }
    let body = compute(tx).await?;
    match key {
        Some(key) => {
            cache.put(key, body.clone());
            Ok((body, "miss"))
        }
        None => Ok((body, "off")),
    }
}

/// Every dashboard figure of the caller's tenant for one window.
#[utoipa::path(get, path = "/v1/analytics", tag = "analytics", params(WindowQuery),
    responses((status = 200, body = Analytics, headers(("X-Cache" = String,
        description = "`hit`: served from the read cache; `miss`: computed and cached; `off`: no cache")))
        , CommandProblems), security(("bearer" = [])))]
#[get("/analytics")]
pub async fn overview(
    tenants: web::Data<TenantPool>,
    cache: web::Data<ReadCache>,
    auth: Authenticated,
    query: web::Query<WindowQuery>,
) -> Result<HttpResponse, ApiError> {
    let tenant = &auth.0.tenant_id;
    let mut tx = snapshot_tx(&tenants, tenant).await?;
    let (w, _) = window(&mut tx, &query).await?;
    let (body, cache_result) = cached(
        &cache,
        &mut tx,
        tenant,
        View::Analytics,
        described(&w, None),
        async |conn: &mut PgConnection| {
            let result = analytics::compute(conn, tenant, &w)
                .await
                .map_err(read_error)?;
            serde_json::to_string(&result).map_err(unserialisable)
        },
    )
    .await?;
    end_read(tx);
    Ok(HttpResponse::Ok()
        .content_type("application/json")
        .insert_header(("X-Cache", cache_result))
        .body(body))
}

/// Cost allocation per period: questions, engine calls, characters in and out, sync runs.
#[utoipa::path(get, path = "/v1/analytics/cost", tag = "analytics", params(WindowQuery),
    responses((status = 200, description = "JSON, or CSV with format=csv",
        content((Vec<CostRow> = "application/json"), (String = "text/csv")),
        headers(("X-Cache" = String, description = "`hit`, `miss` or `off`, as on `/v1/analytics`"))),
        CommandProblems),
    security(("bearer" = [])))]
#[get("/analytics/cost")]
pub async fn cost(
    tenants: web::Data<TenantPool>,
    cache: web::Data<ReadCache>,
    auth: Authenticated,
    query: web::Query<WindowQuery>,
) -> Result<HttpResponse, ApiError> {
    let tenant = &auth.0.tenant_id;
    let mut tx = snapshot_tx(&tenants, tenant).await?;
    let (w, format) = window(&mut tx, &query).await?;
    let csv = format == Some(CostFormat::Csv);
    let (body, cache_result) = cached(
        &cache,
        &mut tx,
        tenant,
        View::Cost,
        described(&w, format),
        async |conn: &mut PgConnection| {
            let rows = analytics::cost(conn, tenant, &w)
                .await
                .map_err(read_error)?;
            if csv {
                let mut body = analytics::COST_CSV_HEADER.to_string();
                for r in &rows {
                    body.push_str(&r.csv_line());
                }
                Ok(body)
            } else {
                serde_json::to_string(&rows).map_err(unserialisable)
            }
        },
    )
    .await?;
    end_read(tx);
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
