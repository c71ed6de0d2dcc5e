//! What platform operators read about the service itself (docs/observability.md): each service
//! level objective with its error budget and burn rates, and the system health trends, from
//! the indicators recorded in Postgres (`crate::slo`).
use std::time::Duration;

use actix_web::{get, web, HttpResponse};
use chrono::{DateTime, TimeDelta, Utc};
use domain::Code;
use serde::{Deserialize, Serialize};
use sqlx::PgPool;
use utoipa::{IntoParams, ToSchema};

use crate::auth::PlatformOperator;
use crate::config::SloSettings;
use crate::problem::ApiError;
use crate::routes::CommandProblems;
use crate::slo::{self, Distribution, Series, SloError, Tally};

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(objectives).service(trends);
}

fn slo_error(e: SloError) -> ApiError {
    match &e {
        SloError::Unreadable(_) => ApiError::infrastructure(
            Code::StoredDataUnreadable,
            "the recorded service level indicators are unreadable",
            &e,
        ),
        SloError::Database(_) => ApiError::infrastructure(
            Code::ServiceUnavailable,
            "the service level indicators could not be read",
            &e,
        ),
    }
}

fn recording(slis: &Option<web::Data<slo::SliRecorder>>) -> Result<(), ApiError> {
    if slis.is_none() {
        return Err(ApiError::new(
            Code::RouteNotFound,
            "service level indicators are not recorded in this deployment (slo.enabled)",
        ));
    }
    Ok(())
}

/// Burn rates over the alerting windows: how many times faster than sustainable the error
/// budget is being spent (1: exactly used up at the window's end). `null` without events.
#[derive(Debug, Serialize, ToSchema)]
pub struct BurnRates {
    pub one_hour: Option<f64>,
    pub six_hours: Option<f64>,
    pub three_days: Option<f64>,
}

/// One service level objective over the rolling window.
#[derive(Debug, Serialize, ToSchema)]
pub struct ObjectiveView {
    /// `commands_availability`, `reads_availability`, `latency` or `freshness`.
    pub name: String,
    pub description: String,
    /// The share of good events promised, e.g. 0.999.
    pub target: f64,
    /// Good and total events over the window.
    pub good: i64,
    pub total: i64,
    /// The share of good events over the window; `null` without events.
    pub current: Option<f64>,
    /// The share of the window's error budget left: 1 untouched, 0 spent, below 0 overspent.
    pub error_budget_remaining: f64,
    pub burn_rates: BurnRates,
    /// `ok`, `burning` (a paging burn rate: 14.4x over an hour or 6x over six hours) or
    /// `exhausted` (no budget left).
    pub status: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ObjectivesReport {
    pub generated_at: DateTime<Utc>,
    pub window_days: u32,
    pub objectives: Vec<ObjectiveView>,
}

fn budget_remaining(t: Tally, target: f64) -> f64 {
    if t.total == 0 {
        return 1.0;
    }
    let bad = (t.total - t.good) as f64;
    let allowed = (1.0 - target) * t.total as f64;
    1.0 - bad / allowed
}

/// Every objective: target, current level, error budget left over the rolling window, burn
/// rates over 1 h, 6 h and 3 days. Figures of every instance, from Postgres.
#[utoipa::path(get, path = "/v1/platform/slos", tag = "platform",
    responses((status = 200, body = ObjectivesReport), CommandProblems), security(("platform" = [])))]
#[get("/platform/slos")]
#[tracing::instrument(skip_all, err)]
pub async fn objectives(
    pool: web::Data<PgPool>,
    settings: web::Data<SloSettings>,
    slis: Option<web::Data<slo::SliRecorder>>,
    _operator: PlatformOperator,
) -> Result<HttpResponse, ApiError> {
    recording(&slis)?;
    let now = Utc::now();
    let tallies = slo::tallies(&pool, settings.window_days, now)
        .await
        .map_err(slo_error)?;
    let objectives = slo::objectives(&settings)
        .into_iter()
        .map(|o| {
            let w = tallies.get(&o.series);
            let pick = |f: fn(&slo::Windows) -> Tally| w.map(f).unwrap_or_default();
            let window = pick(|w| w.window);
            let burn = BurnRates {
                one_hour: pick(|w| w.hour).burn_rate(o.target),
                six_hours: pick(|w| w.six_hours).burn_rate(o.target),
                three_days: pick(|w| w.three_days).burn_rate(o.target),
            };
            let remaining = budget_remaining(window, o.target);
            let status = if remaining <= 0.0 {
                "exhausted"
            } else if burn.one_hour.is_some_and(|b| b >= 14.4)
                || burn.six_hours.is_some_and(|b| b >= 6.0)
            {
                "burning"
            } else {
                "ok"
            };
            ObjectiveView {
                name: o.series.as_str().into(),
                description: o.description,
                target: o.target,
                good: window.good,
                total: window.total,
                current: window.ratio(),
                error_budget_remaining: remaining,
                burn_rates: burn,
                status: status.into(),
            }
        })
        .collect();
    Ok(HttpResponse::Ok().json(ObjectivesReport {
        generated_at: now,
        window_days: settings.window_days,
        objectives,
    }))
}

/// A trend's span.
#[derive(Debug, Clone, Copy, Deserialize, Serialize, ToSchema)]
pub enum TrendRange {
    #[serde(rename = "24h")]
    Day,
    #[serde(rename = "7d")]
    Week,
    #[serde(rename = "30d")]
    Month,
}

impl TrendRange {
    /// The span and the width of one point: 24 hourly, 28 six-hourly or 30 daily points.
    fn span_and_step(self) -> (TimeDelta, Duration) {
        match self {
            TrendRange::Day => (TimeDelta::hours(24), Duration::from_secs(3600)),
            TrendRange::Week => (TimeDelta::days(7), Duration::from_secs(6 * 3600)),
            TrendRange::Month => (TimeDelta::days(30), Duration::from_secs(24 * 3600)),
        }
    }
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct TrendQuery {
    /// `24h` (hourly points, the default), `7d` (six-hourly) or `30d` (daily).
    pub range: Option<TrendRange>,
}

/// One period of the system's health.
#[derive(Debug, Serialize, ToSchema)]
pub struct TrendPoint {
    pub start: DateTime<Utc>,
    /// `/v1` requests answered (commands and reads).
    pub requests: i64,
    pub requests_per_second: f64,
    /// Share of those answered with a server error; `null` without requests.
    pub error_rate: Option<f64>,
    /// 95th percentile of request latency (requests waiting for an engine aside).
    pub latency_p95_ms: Option<f64>,
    pub engine_calls: i64,
    /// Share of engine calls that did not answer.
    pub engine_error_rate: Option<f64>,
    pub engine_latency_p95_ms: Option<f64>,
    /// Share of read-side samples in which every projection was fresh.
    pub freshness: Option<f64>,
    /// The furthest any projection was behind, seconds.
    pub lag_max_seconds: Option<f64>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct TrendReport {
    pub range: TrendRange,
    pub step_seconds: u64,
    pub points: Vec<TrendPoint>,
}

/// The system health trends over 24 hours, 7 or 30 days: request rate, error rate, p95
/// latency, the engine's error rate and p95, read-model freshness and lag, per period, from
/// the indicators every instance records.
#[utoipa::path(get, path = "/v1/platform/health/trends", tag = "platform", params(TrendQuery),
    responses((status = 200, body = TrendReport), CommandProblems), security(("platform" = [])))]
#[get("/platform/health/trends")]
#[tracing::instrument(skip_all, err)]
pub async fn trends(
    pool: web::Data<PgPool>,
    slis: Option<web::Data<slo::SliRecorder>>,
    query: web::Query<TrendQuery>,
    _operator: PlatformOperator,
) -> Result<HttpResponse, ApiError> {
    recording(&slis)?;
    let range = query.range.unwrap_or(TrendRange::Day);
    let (span, step) = range.span_and_step();
    let now = Utc::now();
    // Periods end at the next minute boundary, so the current minute is in the last one.
    let to = slo::minute_of(now) + TimeDelta::minutes(1);
    let from = to - span;
    let (tallies, summed) = slo::trend(&pool, from, to, step).await.map_err(slo_error)?;
    let step_delta = TimeDelta::from_std(step).unwrap_or(TimeDelta::hours(1));
    let periods = span.num_seconds() / step_delta.num_seconds();
    let mut points = Vec::new();
    for i in 0..periods {
        let start = from + step_delta * i32::try_from(i).unwrap_or(0);
        let tally = |s: Series| tallies.get(&(s, start)).copied().unwrap_or_default();
        let commands = tally(Series::CommandsAvailability);
        let reads = tally(Series::ReadsAvailability);
        let requests = Tally {
            good: commands.good + reads.good,
            total: commands.total + reads.total,
        };
        let engine = tally(Series::EngineAvailability);
        let p95_ms = |d: Distribution| {
            summed
                .get(&(d, start))
                .and_then(|s| s.quantile(d.bounds(), 0.95))
                .map(|s| s * 1000.0)
        };
        points.push(TrendPoint {
            start,
            requests: requests.total,
            requests_per_second: requests.total as f64 / step.as_secs_f64(),
            error_rate: requests.ratio().map(|r| 1.0 - r),
            latency_p95_ms: p95_ms(Distribution::HttpLatency),
            engine_calls: engine.total,
            engine_error_rate: engine.ratio().map(|r| 1.0 - r),
            engine_latency_p95_ms: p95_ms(Distribution::EngineLatency),
            freshness: tally(Series::Freshness).ratio(),
            lag_max_seconds: summed
                .get(&(Distribution::ProjectionLag, start))
                .map(|s| s.max),
        });
    }
    Ok(HttpResponse::Ok().json(TrendReport {
        range,
        step_seconds: step.as_secs(),
        points,
    }))
}
