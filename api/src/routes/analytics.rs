//! Per-tenant analytics (any role): volume and trends, outcomes, feedback, funnel, intents and
//! topics, coverage gaps, sources, and cost allocation.
use actix_web::{get, web, HttpResponse};
use chrono::{DateTime, Duration, Utc};
use domain::Code;
use projections::analytics::{self, Analytics, CostRow, Window};
use serde::Deserialize;
use sqlx::PgPool;
use utoipa::IntoParams;

use crate::auth::Authenticated;
use crate::problem::ApiError;
use crate::routes::conversations::read_error;
use crate::routes::CommandProblems;

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(overview).service(cost);
}

#[derive(Debug, Deserialize, IntoParams)]
pub struct WindowQuery {
    /// `24h`, `7d` (default) or `30d`, ending now; ignored when `from` is given.
    pub range: Option<String>,
    /// Custom window start (RFC 3339, inclusive).
    pub from: Option<DateTime<Utc>>,
    /// Custom window end (RFC 3339, exclusive; default now).
    pub to: Option<DateTime<Utc>>,
    /// `hour`, `day` or `week` (default: hour for 24h, else day).
    pub bucket: Option<String>,
    /// IANA time zone for the buckets (default `UTC`).
    pub tz: Option<String>,
    /// Cost only: `json` (default) or `csv`.
    pub format: Option<String>,
}

async fn window(pool: &PgPool, q: &WindowQuery) -> Result<Window, ApiError> {
    let now = Utc::now();
    let (from, to, default_bucket) = match (q.from, q.range.as_deref()) {
        (Some(from), _) => (from, q.to.unwrap_or(now), "day"),
        (None, Some("24h")) => (now - Duration::hours(24), now, "hour"),
        (None, None | Some("7d")) => (now - Duration::days(7), now, "day"),
        (None, Some("30d")) => (now - Duration::days(30), now, "day"),
        (None, Some(_)) => {
            return Err(ApiError::new(
                Code::InvalidRange,
                "range is `24h`, `7d` or `30d`",
            ))
        }
    };
    if from >= to || to - from > Duration::days(366) {
        return Err(ApiError::new(
            Code::InvalidWindow,
            "`from` must be before `to`, at most 366 days apart",
        ));
    }
    let bucket = q
        .bucket
        .clone()
        .unwrap_or_else(|| default_bucket.to_string());
    if !matches!(bucket.as_str(), "hour" | "day" | "week") {
        return Err(ApiError::new(
            Code::InvalidBucket,
            "bucket is `hour`, `day` or `week`",
        ));
    }
    let tz = q.tz.clone().unwrap_or_else(|| "UTC".to_string());
    if !analytics::valid_time_zone(pool, &tz)
        .await
        .map_err(read_error)?
    {
        return Err(ApiError::new(
            Code::InvalidTimeZone,
            format!("`{tz}` is not an IANA time zone"),
        ));
    }
    Ok(Window {
        from,
        to,
        bucket,
        tz,
    })
}

/// Every dashboard figure of the caller's tenant for one window.
#[utoipa::path(get, path = "/v1/analytics", tag = "analytics", params(WindowQuery),
    responses((status = 200, body = Analytics), CommandProblems), security(("bearer" = [])))]
#[get("/analytics")]
pub async fn overview(
    pool: web::Data<PgPool>,
    auth: Authenticated,
    query: web::Query<WindowQuery>,
) -> Result<HttpResponse, ApiError> {
    let w = window(&pool, &query).await?;
    let result = analytics::compute(&pool, &auth.0.tenant_id, &w)
        .await
        .map_err(read_error)?;
    Ok(HttpResponse::Ok().json(result))
}

/// Cost allocation per period: questions, engine calls, characters in and out, sync runs.
#[utoipa::path(get, path = "/v1/analytics/cost", tag = "analytics", params(WindowQuery),
    responses((status = 200, body = Vec<CostRow>, description = "JSON, or CSV with format=csv"), CommandProblems),
    security(("bearer" = [])))]
#[get("/analytics/cost")]
pub async fn cost(
    pool: web::Data<PgPool>,
    auth: Authenticated,
    query: web::Query<WindowQuery>,
) -> Result<HttpResponse, ApiError> {
    let csv = match query.format.as_deref() {
        None | Some("json") => false,
        Some("csv") => true,
        Some(_) => {
            return Err(ApiError::new(
                Code::InvalidFormat,
                "format is `json` or `csv`",
            ))
        }
    };
    let w = window(&pool, &query).await?;
    let rows = analytics::cost(&pool, &auth.0.tenant_id, &w)
        .await
        .map_err(read_error)?;
    if csv {
        let mut body = analytics::COST_CSV_HEADER.to_string();
        for r in &rows {
            body.push_str(&r.csv_line());
        }
        Ok(HttpResponse::Ok()
            .content_type("text/csv; charset=utf-8")
            .body(body))
    } else {
        Ok(HttpResponse::Ok().json(rows))
    }
}
