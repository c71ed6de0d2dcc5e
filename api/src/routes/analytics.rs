//! Per-tenant analytics (any role): volume and trends, outcomes, feedback, funnel, intents and
//! topics, coverage gaps, sources, and cost allocation.
use actix_web::{get, web, HttpResponse};
use chrono::{Duration, Utc};
use domain::Code;
use event_store::TenantPool;
use projections::analytics::{self, Analytics, CostRow, Window};
use serde::Deserialize;
use sqlx::PgConnection;

use super::{end_read, tenant_tx};
use utoipa::IntoParams;

use crate::auth::Authenticated;
use crate::dto::Moment;
use crate::problem::ApiError;
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
    /// `24h`, `7d` (default) or `30d`, ending now; ignored when `from` is given.
    #[param(value_type = Option<RangeWord>, inline)]
    pub range: Option<String>,
    /// Custom window start (RFC 3339, inclusive).
    #[param(value_type = Option<Moment>, inline)]
    pub from: Option<Moment>,
    /// Custom window end (RFC 3339, exclusive; default now).
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
    let now = Utc::now();
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

/// Every dashboard figure of the caller's tenant for one window.
#[utoipa::path(get, path = "/v1/analytics", tag = "analytics", params(WindowQuery),
    responses((status = 200, body = Analytics), CommandProblems), security(("bearer" = [])))]
#[get("/analytics")]
pub async fn overview(
    tenants: web::Data<TenantPool>,
    auth: Authenticated,
    query: web::Query<WindowQuery>,
) -> Result<HttpResponse, ApiError> {
    let mut tx = tenant_tx(&tenants, &auth.0.tenant_id).await?;
    let (w, _) = window(&mut tx, &query).await?;
    let result = analytics::compute(&mut tx, &auth.0.tenant_id, &w)
        .await
        .map_err(read_error)?;
    end_read(tx);
    Ok(HttpResponse::Ok().json(result))
}

/// Cost allocation per period: questions, engine calls, characters in and out, sync runs.
#[utoipa::path(get, path = "/v1/analytics/cost", tag = "analytics", params(WindowQuery),
    responses((status = 200, description = "JSON, or CSV with format=csv",
        content((Vec<CostRow> = "application/json"), (String = "text/csv"))), CommandProblems),
    security(("bearer" = [])))]
#[get("/analytics/cost")]
pub async fn cost(
    tenants: web::Data<TenantPool>,
    auth: Authenticated,
    query: web::Query<WindowQuery>,
) -> Result<HttpResponse, ApiError> {
    let mut tx = tenant_tx(&tenants, &auth.0.tenant_id).await?;
    let (w, format) = window(&mut tx, &query).await?;
    let csv = format == Some(CostFormat::Csv);
    let rows = analytics::cost(&mut tx, &auth.0.tenant_id, &w)
        .await
        .map_err(read_error)?;
    end_read(tx);
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
