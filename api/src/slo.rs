//! Service level indicators recorded per minute in Postgres, and the objectives over them
//! (docs/observability.md). Prometheus computes the same from `/metrics` for alerts; these
//! figures survive restarts, add up across instances and need no Prometheus, so an operator
//! route can show each objective's error budget and burn rates, and the health trends.
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use sqlx::PgPool;

use crate::config::SloSettings;

/// An indicator counted as good and total events per minute.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Series {
    /// `/v1` commands answered without a server error.
    CommandsAvailability,
    /// `/v1` reads answered without a server error.
    ReadsAvailability,
    /// `/v1` requests (except those waiting for an engine) faster than the threshold.
    Latency,
    /// Samples of the read side in which no projection was further behind than the threshold.
    Freshness,
    /// Answer engine calls that answered (no objective: the trends show it).
    EngineAvailability,
}

impl Series {
    pub const ALL: [Series; 5] = [
        Series::CommandsAvailability,
        Series::ReadsAvailability,
        Series::Latency,
        Series::Freshness,
        Series::EngineAvailability,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Series::CommandsAvailability => "commands_availability",
            Series::ReadsAvailability => "reads_availability",
            Series::Latency => "latency",
            Series::Freshness => "freshness",
            Series::EngineAvailability => "engine_availability",
        }
    }

    fn parse(stored: &str) -> Result<Self, SloError> {
        Self::ALL
            .into_iter()
            .find(|s| s.as_str() == stored)
            .ok_or_else(|| SloError::Unreadable(format!("unknown indicator `{stored}`")))
    }
}

/// A quantity recorded as a histogram per minute.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Distribution {
    HttpLatency,
    EngineLatency,
    ProjectionLag,
}

impl Distribution {
    pub const ALL: [Distribution; 3] = [
        Distribution::HttpLatency,
        Distribution::EngineLatency,
        Distribution::ProjectionLag,
    ];

    fn parse(stored: &str) -> Result<Self, SloError> {
        Self::ALL
            .into_iter()
            .find(|d| d.as_str() == stored)
            .ok_or_else(|| SloError::Unreadable(format!("unknown distribution `{stored}`")))
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Distribution::HttpLatency => "http_latency_seconds",
            Distribution::EngineLatency => "engine_latency_seconds",
            Distribution::ProjectionLag => "projection_lag_seconds",
        }
    }

    /// Upper bounds of the finite buckets, seconds; a last bucket holds the rest (+Inf). The
    /// same as the Prometheus histograms, so both give the same quantiles.
    pub fn bounds(self) -> &'static [f64] {
        match self {
            Distribution::HttpLatency => crate::metrics::LATENCY_BUCKETS,
            Distribution::EngineLatency => crate::metrics::ENGINE_BUCKETS,
            Distribution::ProjectionLag => &[1.0, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0],
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SloError {
    #[error("the service level indicators could not be read or written")]
    Database(#[from] sqlx::Error),
    /// Stored figures this build cannot read (a bucket layout it does not know...).
    #[error("unreadable service level indicators: {0}")]
    Unreadable(String),
}

#[derive(Default, Clone, Copy)]
struct Counts {
    good: i64,
    total: i64,
}

#[derive(Clone)]
struct Histogram {
    counts: Vec<i64>,
    sum: f64,
    max: f64,
}

impl Histogram {
    fn new(buckets: usize) -> Self {
        Self {
            counts: vec![0; buckets + 1],
            sum: 0.0,
            max: 0.0,
        }
    }

    fn observe(&mut self, bounds: &[f64], value: f64) {
        let i = bounds
            .iter()
            .position(|b| value <= *b)
            .unwrap_or(bounds.len());
        self.counts[i] += 1;
        self.sum += value;
        self.max = self.max.max(value);
    }
}

/// The start of the minute `at` falls in.
pub fn minute_of(at: DateTime<Utc>) -> DateTime<Utc> {
    let secs = at.timestamp();
    DateTime::from_timestamp(secs - secs.rem_euclid(60), 0).unwrap_or(at)
}

/// Requests that wait for an answer engine (seconds, not milliseconds): the latency objective
/// leaves them out; the engine's latency has its own trend. Checked against the OpenAPI
/// document by a test, so a renamed route cannot slip out of this list unnoticed.
pub const ENGINE_BOUND_ROUTES: &[(&str, &str)] = &[
    ("POST", "/v1/conversations"),
    ("POST", "/v1/conversations/{id}/questions"),
    ("POST", "/v1/sources/kapa/retrieval"),
    ("GET", "/v1/sources/kapa"),
    ("POST", "/v1/sources/kapa/{kapa_source_id}/import"),
];

/// How one HTTP request counts for the objectives: the same judgement feeds Postgres and
/// the Prometheus counters (`answers_sli_*`).
#[derive(Debug, PartialEq)]
pub struct Judged {
    /// Commands' or reads' availability, and whether it was good.
    pub availability: Option<(Series, bool)>,
    /// Whether it was fast enough (`None`: not timed for the objective).
    pub latency: Option<bool>,
}

/// Judges a request: `route` is its template (`None`: no route matched, which counts for no
/// objective: the client asked for something that does not exist); only `/v1` counts.
pub fn judge(
    threshold_seconds: f64,
    method: &str,
    route: Option<&str>,
    status: u16,
    seconds: f64,
) -> Judged {
    let Some(route) = route.filter(|r| r.starts_with("/v1/")) else {
        return Judged {
            availability: None,
            latency: None,
        };
    };
    let series = match method {
        "GET" | "HEAD" => Series::ReadsAvailability,
        _ => Series::CommandsAvailability,
    };
    let engine_bound = ENGINE_BOUND_ROUTES
        .iter()
        .any(|(m, r)| *m == method && *r == route);
    Judged {
        availability: Some((series, status < 500)),
        latency: (!engine_bound).then_some(seconds <= threshold_seconds),
    }
}

/// What this instance counted since its last flush.
pub struct SliRecorder {
    settings: SloSettings,
    counts: Mutex<HashMap<(Series, DateTime<Utc>), Counts>>,
    histograms: Mutex<HashMap<(Distribution, DateTime<Utc>), Histogram>>,
}

impl SliRecorder {
    pub fn new(settings: SloSettings) -> Self {
        Self {
            settings,
            counts: Mutex::new(HashMap::new()),
            histograms: Mutex::new(HashMap::new()),
        }
    }

    pub fn settings(&self) -> &SloSettings {
        &self.settings
    }

    fn count(&self, series: Series, good: bool) {
        let key = (series, minute_of(Utc::now()));
        let mut counts = self.counts.lock().unwrap_or_else(|e| e.into_inner());
        let c = counts.entry(key).or_default();
        c.total += 1;
        c.good += i64::from(good);
    }

    fn observe(&self, distribution: Distribution, value: f64) {
        let key = (distribution, minute_of(Utc::now()));
        let bounds = distribution.bounds();
        let mut histograms = self.histograms.lock().unwrap_or_else(|e| e.into_inner());
        histograms
            .entry(key)
            .or_insert_with(|| Histogram::new(bounds.len()))
            .observe(bounds, value);
    }

    /// One HTTP request answered, as [`judge`]d.
    pub fn request(&self, judged: &Judged, seconds: f64) {
        if let Some((series, good)) = judged.availability {
            self.count(series, good);
        }
        if let Some(fast) = judged.latency {
            self.count(Series::Latency, fast);
            self.observe(Distribution::HttpLatency, seconds);
        }
    }

    /// One answer engine call, answered or not.
    pub fn engine_call(&self, answered: bool, seconds: f64) {
        self.count(Series::EngineAvailability, answered);
        self.observe(Distribution::EngineLatency, seconds);
    }

    /// One sample of the read side: how far the furthest-behind projection is, seconds.
    /// Returns whether it was fresh.
    pub fn read_side_sample(&self, max_lag_seconds: f64) -> bool {
        let fresh = max_lag_seconds <= self.settings.freshness_threshold_seconds;
        self.count(Series::Freshness, fresh);
        self.observe(Distribution::ProjectionLag, max_lag_seconds);
        fresh
    }

    /// Adds what was counted to Postgres (one transaction) and forgets it; on failure the
    /// counts are kept for the next flush.
    #[tracing::instrument(skip_all, err)]
    pub async fn flush(&self, pool: &PgPool) -> Result<(), SloError> {
        let counts: Vec<_> =
            std::mem::take(&mut *self.counts.lock().unwrap_or_else(|e| e.into_inner()))
                .into_iter()
                .collect();
        let histograms: Vec<_> =
            std::mem::take(&mut *self.histograms.lock().unwrap_or_else(|e| e.into_inner()))
                .into_iter()
                .collect();
        if counts.is_empty() && histograms.is_empty() {
            return Ok(());
        }
        let written = async {
            let mut tx = pool.begin().await?;
            for ((series, minute), c) in &counts {
                sqlx::query(
                    "INSERT INTO sli_minutes (series, minute, good, total) VALUES ($1, $2, $3, $4)
                     ON CONFLICT (series, minute) DO UPDATE
                        SET good = sli_minutes.good + excluded.good,
                            total = sli_minutes.total + excluded.total",
                )
                .bind(series.as_str())
                .bind(minute)
                .bind(c.good)
                .bind(c.total)
                .execute(&mut *tx)
                .await?;
            }
            for ((distribution, minute), h) in &histograms {
                // Element-wise addition; a row with another bucket layout is refused by the
                // length check rather than silently mixed.
                let updated = sqlx::query(
                    "INSERT INTO distribution_minutes AS d (series, minute, counts, sum, max)
                     VALUES ($1, $2, $3, $4, $5)
                     ON CONFLICT (series, minute) DO UPDATE
                        SET counts = ARRAY(SELECT a + b FROM unnest(d.counts, excluded.counts) AS u(a, b)),
                            sum = d.sum + excluded.sum,
                            max = GREATEST(d.max, excluded.max)
                      WHERE cardinality(d.counts) = cardinality(excluded.counts)",
                )
                .bind(distribution.as_str())
                .bind(minute)
                .bind(&h.counts)
                .bind(h.sum)
                .bind(h.max)
                .execute(&mut *tx)
                .await?;
                if updated.rows_affected() == 0 {
                    tracing::warn!(
                        series = distribution.as_str(),
                        %minute,
                        "a stored distribution has another bucket layout; this minute's figures are dropped"
                    );
                }
            }
            tx.commit().await
        }
        .await;
        if let Err(error) = written {
            self.restore(counts, histograms);
            return Err(error.into());
        }
        Ok(())
    }

    fn restore(
        &self,
        counts: Vec<((Series, DateTime<Utc>), Counts)>,
        histograms: Vec<((Distribution, DateTime<Utc>), Histogram)>,
    ) {
        let mut mine = self.counts.lock().unwrap_or_else(|e| e.into_inner());
        for (key, c) in counts {
            let e = mine.entry(key).or_default();
            e.good += c.good;
            e.total += c.total;
        }
        drop(mine);
        let mut mine = self.histograms.lock().unwrap_or_else(|e| e.into_inner());
        for (key, h) in histograms {
            match mine.get_mut(&key) {
                Some(e) => {
                    for (a, b) in e.counts.iter_mut().zip(&h.counts) {
                        *a += b;
                    }
                    e.sum += h.sum;
                    e.max = e.max.max(h.max);
                }
                None => {
                    mine.insert(key, h);
                }
            }
        }
    }

    /// Removes minutes older than the window (and the longest trend, 30 days) with a day to
    /// spare.
    pub async fn purge(&self, pool: &PgPool) -> Result<u64, SloError> {
        let keep = i64::from(self.settings.window_days.max(30) + 1);
        let cutoff = Utc::now() - TimeDelta::days(keep);
        let a = sqlx::query("DELETE FROM sli_minutes WHERE minute < $1")
            .bind(cutoff)
            .execute(pool)
            .await?;
        let b = sqlx::query("DELETE FROM distribution_minutes WHERE minute < $1")
            .bind(cutoff)
            .execute(pool)
            .await?;
        Ok(a.rows_affected() + b.rows_affected())
    }
}

/// One objective as configured.
#[derive(Debug, Clone)]
pub struct Objective {
    pub series: Series,
    pub target: f64,
    pub description: String,
}

/// The objectives `settings` declare.
pub fn objectives(settings: &SloSettings) -> Vec<Objective> {
    vec![
        Objective {
            series: Series::CommandsAvailability,
            target: settings.commands_availability_target,
            description: "/v1 commands answered without a server error (5xx)".into(),
        },
        Objective {
            series: Series::ReadsAvailability,
            target: settings.reads_availability_target,
            description: "/v1 reads answered without a server error (5xx)".into(),
        },
        Objective {
            series: Series::Latency,
            target: settings.latency_target,
            description: format!(
                "/v1 requests answered within {} ms (those waiting for an answer engine aside)",
                settings.latency_threshold_ms
            ),
        },
        Objective {
            series: Series::Freshness,
            target: settings.freshness_target,
            description: format!(
                "samples of the read side with every projection within {} s of the store",
                settings.freshness_threshold_seconds
            ),
        },
    ]
}

/// Good and total over one window.
#[derive(Debug, Clone, Copy, Default, serde::Serialize, utoipa::ToSchema)]
pub struct Tally {
    pub good: i64,
    pub total: i64,
}

impl Tally {
    /// The share of good events; `None` without events.
    pub fn ratio(self) -> Option<f64> {
        (self.total > 0).then(|| self.good as f64 / self.total as f64)
    }

    /// How many times faster than sustainable the budget burns: the error rate over the
    /// budgeted error rate (1 burns the budget exactly over the window). `None` without events.
    pub fn burn_rate(self, target: f64) -> Option<f64> {
        self.ratio().map(|r| (1.0 - r) / (1.0 - target))
    }
}

/// Good and total per indicator over the window and the three burn-rate windows, ending `now`.
pub struct Windows {
    pub window: Tally,
    pub hour: Tally,
    pub six_hours: Tally,
    pub three_days: Tally,
}

/// Reads every indicator's tallies, ending `now`.
pub async fn tallies(
    pool: &PgPool,
    window_days: u32,
    now: DateTime<Utc>,
) -> Result<HashMap<Series, Windows>, SloError> {
    let window_start = now - TimeDelta::days(i64::from(window_days));
    #[derive(sqlx::FromRow)]
    struct Row {
        series: String,
        g: i64,
        t: i64,
        g1: i64,
        t1: i64,
        g6: i64,
        t6: i64,
        g3: i64,
        t3: i64,
    }
    let rows: Vec<Row> = sqlx::query_as(
        "SELECT series,
                coalesce(sum(good), 0)::bigint AS g, coalesce(sum(total), 0)::bigint AS t,
                coalesce(sum(good) FILTER (WHERE minute >= $2 - interval '1 hour'), 0)::bigint AS g1,
                coalesce(sum(total) FILTER (WHERE minute >= $2 - interval '1 hour'), 0)::bigint AS t1,
                coalesce(sum(good) FILTER (WHERE minute >= $2 - interval '6 hours'), 0)::bigint AS g6,
                coalesce(sum(total) FILTER (WHERE minute >= $2 - interval '6 hours'), 0)::bigint AS t6,
                coalesce(sum(good) FILTER (WHERE minute >= $2 - interval '3 days'), 0)::bigint AS g3,
                coalesce(sum(total) FILTER (WHERE minute >= $2 - interval '3 days'), 0)::bigint AS t3
           FROM sli_minutes
          WHERE minute >= $1 AND minute <= $2
          GROUP BY series",
    )
    .bind(window_start)
    .bind(now)
    .fetch_all(pool)
    .await?;
    let mut out = HashMap::new();
    for r in rows {
        let tally = |good, total| Tally { good, total };
        out.insert(
            Series::parse(&r.series)?,
            Windows {
                window: tally(r.g, r.t),
                hour: tally(r.g1, r.t1),
                six_hours: tally(r.g6, r.t6),
                three_days: tally(r.g3, r.t3),
            },
        );
    }
    Ok(out)
}

/// One point of a trend: the buckets of a distribution summed over a period.
pub struct Summed {
    pub counts: Vec<i64>,
    pub max: f64,
}

impl Summed {
    /// The `q` quantile, interpolated inside its bucket as Prometheus' `histogram_quantile`
    /// does (the largest finite bound when it falls in the +Inf bucket). `None` when empty.
    pub fn quantile(&self, bounds: &[f64], q: f64) -> Option<f64> {
        let total: i64 = self.counts.iter().sum();
        if total == 0 {
            return None;
        }
        let rank = q * total as f64;
        let mut seen = 0i64;
        for (i, count) in self.counts.iter().enumerate() {
            let before = seen;
            seen += count;
            if seen as f64 >= rank && *count > 0 {
                let Some(upper) = bounds.get(i) else {
                    return bounds.last().copied();
                };
                let lower = if i == 0 { 0.0 } else { bounds[i - 1] };
                return Some(lower + (upper - lower) * (rank - before as f64) / *count as f64);
            }
        }
        bounds.last().copied()
    }
}

/// Each indicator's good/total and each distribution's summed buckets per period of `step`,
/// from `from` to `to`.
pub async fn trend(
    pool: &PgPool,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
    step: Duration,
) -> Result<
    (
        HashMap<(Series, DateTime<Utc>), Tally>,
        HashMap<(Distribution, DateTime<Utc>), Summed>,
    ),
    SloError,
> {
    let step_secs = step.as_secs_f64();
    let counts: Vec<(String, DateTime<Utc>, i64, i64)> = sqlx::query_as(
        "SELECT series, date_bin(make_interval(secs => $3), minute, $1) AS period,
                sum(good)::bigint, sum(total)::bigint
           FROM sli_minutes WHERE minute >= $1 AND minute < $2
          GROUP BY series, period",
    )
    .bind(from)
    .bind(to)
    .bind(step_secs)
    .fetch_all(pool)
    .await?;
    let mut tallies = HashMap::new();
    for (series, period, good, total) in counts {
        tallies.insert((Series::parse(&series)?, period), Tally { good, total });
    }
    // Periods as the counts' (the same `date_bin`); the buckets are added here, after each
    // minute's layout is checked.
    type Row = (String, DateTime<Utc>, DateTime<Utc>, Vec<i64>, f64);
    let rows: Vec<Row> = sqlx::query_as(
        "SELECT series, minute, date_bin(make_interval(secs => $3), minute, $1), counts, max
           FROM distribution_minutes WHERE minute >= $1 AND minute < $2",
    )
    .bind(from)
    .bind(to)
    .bind(step_secs)
    .fetch_all(pool)
    .await?;
    let mut summed: HashMap<(Distribution, DateTime<Utc>), Summed> = HashMap::new();
    for (series, minute, period, row, max) in rows {
        let distribution = Distribution::parse(&series)?;
        let buckets = distribution.bounds().len() + 1;
        if row.len() != buckets {
            return Err(SloError::Unreadable(format!(
                "{series} at {minute} has {} buckets; this build's layout has {buckets}",
                row.len()
            )));
        }
        let entry = summed.entry((distribution, period)).or_insert(Summed {
            counts: vec![0; buckets],
            max: 0.0,
        });
        for (a, b) in entry.counts.iter_mut().zip(&row) {
            *a += b;
        }
        entry.max = entry.max.max(max);
    }
    Ok((tallies, summed))
}

/// Flushes every `flush_interval_ms`, sampling the read side's lag first; purges old minutes
/// once an hour.
pub fn spawn(
    recorder: std::sync::Arc<SliRecorder>,
    pool: PgPool,
    kafka: streaming::KafkaSettings,
    metrics: Option<std::sync::Arc<crate::metrics::Metrics>>,
) -> tokio::task::JoinHandle<()> {
    let every = Duration::from_millis(recorder.settings.flush_interval_ms);
    tokio::spawn(async move {
        let mut ticker = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
        let mut last_purge = tokio::time::Instant::now();
        loop {
            ticker.tick().await;
            match crate::routes::health::read_side(&pool, &kafka).await {
                Ok((statuses, _)) => {
                    let max = statuses
                        .iter()
                        .map(|p| if p.lag_events > 0 { p.lag_seconds } else { 0.0 })
                        .fold(0.0, f64::max);
                    let fresh = recorder.read_side_sample(max);
                    if let Some(metrics) = &metrics {
                        metrics.sli(Series::Freshness, fresh);
                    }
                }
                Err(error) => {
                    tracing::warn!(%error, "slo: the read side's lag could not be sampled")
                }
            }
            // A failed flush keeps its counts for the next one (and logs through `err`).
            let _ = recorder.flush(&pool).await;
            if last_purge.elapsed() >= Duration::from_secs(3600) {
                last_purge = tokio::time::Instant::now();
                if let Err(error) = recorder.purge(&pool).await {
                    tracing::warn!(%error, "slo: old minutes could not be purged");
                }
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn burn_rate_is_the_error_rate_over_the_budgeted_one() {
        let t = Tally {
            good: 990,
            total: 1000,
        };
        let burn = t.burn_rate(0.999).unwrap_or_default();
        assert!((burn - 10.0).abs() < 1e-9, "{burn}");
        assert_eq!(Tally::default().burn_rate(0.999), None);
    }

    #[test]
    fn quantiles_interpolate_inside_the_bucket() {
        let bounds = [0.1, 0.5, 1.0];
        // 10 under 0.1, 10 in (0.1, 0.5], none above.
        let s = Summed {
            counts: vec![10, 10, 0, 0],
            max: 0.4,
        };
        let p50 = s.quantile(&bounds, 0.5).unwrap_or_default();
        assert!((p50 - 0.1).abs() < 1e-9, "{p50}");
        let p95 = s.quantile(&bounds, 0.95).unwrap_or_default();
        assert!((p95 - 0.46).abs() < 1e-9, "{p95}");
        let overflow = Summed {
            counts: vec![0, 0, 0, 5],
            max: 9.0,
        };
        assert_eq!(overflow.quantile(&bounds, 0.5), Some(1.0));
        assert_eq!(
            Summed {
                counts: vec![0; 4],
                max: 0.0
            }
            .quantile(&bounds, 0.5),
            None
        );
    }

    #[test]
    fn engine_bound_routes_exist_in_the_api() {
        use utoipa::OpenApi;
        let doc = crate::openapi::ApiDoc::openapi();
        for (method, route) in ENGINE_BOUND_ROUTES {
            let item = doc.paths.paths.get(*route);
            let has = item.is_some_and(|i| match *method {
                "GET" => i.get.is_some(),
                "POST" => i.post.is_some(),
                _ => false,
            });
            assert!(has, "{method} {route} is in the OpenAPI document");
        }
    }

    #[test]
    fn requests_are_judged_by_method_route_status_and_time() {
        let judged = judge(0.5, "POST", Some("/v1/sources"), 201, 0.1);
        assert_eq!(
            judged.availability,
            Some((Series::CommandsAvailability, true))
        );
        assert_eq!(judged.latency, Some(true));
        let judged = judge(0.5, "GET", Some("/v1/conversations"), 503, 0.7);
        assert_eq!(
            judged.availability,
            Some((Series::ReadsAvailability, false))
        );
        assert_eq!(judged.latency, Some(false));
        // Waits for the engine: available or not, but not timed.
        let judged = judge(0.5, "POST", Some("/v1/conversations"), 201, 3.0);
        assert_eq!(
            judged.availability,
            Some((Series::CommandsAvailability, true))
        );
        assert_eq!(judged.latency, None);
        for (route, status) in [
            (None, 404),
            (Some("/health/ready"), 503),
            (Some("/metrics"), 200),
        ] {
            assert_eq!(
                judge(0.5, "GET", route, status, 0.1),
                Judged {
                    availability: None,
                    latency: None
                }
            );
        }
    }

    #[test]
    fn minutes_are_truncated() {
        let at = DateTime::from_timestamp(1_700_000_123, 456).unwrap_or_default();
        assert_eq!(minute_of(at).timestamp(), 1_700_000_100);
    }
}
