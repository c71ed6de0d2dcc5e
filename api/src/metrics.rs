//! Prometheus metrics (docs/metrics.md): RED per route template, per-tenant counters with a
//! bounded number of tenant labels, connection pools, the process.
//!
//! One registry per [`crate::Application`], not a process-global recorder: tests run many
//! applications in one process and read exact figures from each (docs/decisions.md).
use std::collections::HashSet;
use std::sync::Mutex;
use std::time::Instant;

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::middleware::Next;
use actix_web::{web, Error, HttpMessage};
use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry,
    TextEncoder,
};
use sqlx::PgPool;

/// The label a tenant is counted under once the cap is reached.
pub const OTHER_TENANT: &str = "other";

/// Request latency buckets, seconds: the 500 ms objective sits on a boundary.
pub const LATENCY_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// Answer engine latency buckets, seconds.
pub const ENGINE_BUCKETS: &[f64] = &[0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0];

/// Tenant label values, at most `cap` distinct ones; the rest are `other`. A platform with 100k
/// tenants then exports at most `cap + 1` series per tenant metric.
struct TenantLabels {
    cap: usize,
    seen: Mutex<HashSet<String>>,
}

impl TenantLabels {
    fn label<'a>(&self, tenant: &'a str) -> &'a str {
        let mut seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        if seen.contains(tenant) {
            return tenant;
        }
        if seen.len() < self.cap {
            seen.insert(tenant.to_string());
            return tenant;
        }
        OTHER_TENANT
    }
}

/// The service's metrics.
pub struct Metrics {
    http_requests: IntCounterVec,
    http_duration: HistogramVec,
    http_in_flight: IntGauge,
    problems: IntCounterVec,
    tenant_requests: IntCounterVec,
    tenant_questions: IntCounterVec,
    tenant_rate_limited: IntCounterVec,
    pool_size: IntGaugeVec,
    pool_idle: IntGaugeVec,
    pool_pending: IntGauge,
    tenant_engine_calls: IntCounterVec,
    tenant_engine_failures: IntCounterVec,
    projection_lag_events: IntGaugeVec,
    projection_lag_seconds: prometheus::GaugeVec,
    projection_applied: IntGaugeVec,
    projection_dead_letters: IntGaugeVec,
    projection_rebuild: prometheus::GaugeVec,
    projection_stalls: IntGaugeVec,
    relay_lag_events: IntGaugeVec,
    relay_published: IntGaugeVec,
    relay_lag_seconds: prometheus::GaugeVec,
    engine_calls: IntCounterVec,
    engine_latency: HistogramVec,
    engine_breakers: IntGaugeVec,
    answers: IntCounterVec,
    quality_breached: IntGauge,
    sli_total: IntCounterVec,
    sli_good: IntCounterVec,
    _slo_target: prometheus::GaugeVec,
    tenants: TenantLabels,
    pools: Vec<(&'static str, PgPool)>,
    api_pool: Option<event_store::TenantPool>,
    tracked: Tracked,
}

/// A registry that remembers what was registered, so that metrics without samples yet are
/// still announced (`# HELP`/`# TYPE`): a dashboard or alert naming a metric that exists but has
/// not counted anything yet is not an error (checked by a test against deploy/).
struct Tracked {
    registry: Registry,
    all: Mutex<Vec<Box<dyn prometheus::core::Collector>>>,
}

fn register<C: prometheus::core::Collector + Clone + 'static>(
    tracked: &Tracked,
    collector: C,
) -> prometheus::Result<C> {
    tracked.registry.register(Box::new(collector.clone()))?;
    tracked
        .all
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .push(Box::new(collector.clone()));
    Ok(collector)
}

impl Metrics {
    /// A registry with every metric, tenant labels capped at `tenant_label_cap`; `pools` are
    /// sampled at each scrape.
    pub fn new(
        tenant_label_cap: usize,
        pools: Vec<(&'static str, PgPool)>,
        api_pool: Option<event_store::TenantPool>,
        slo: &crate::config::SloSettings,
    ) -> prometheus::Result<Self> {
        let registry = Registry::new();
        #[cfg(target_os = "linux")]
        registry.register(Box::new(
            prometheus::process_collector::ProcessCollector::for_self(),
        ))?;
        let tracked = Tracked {
            registry,
            all: Mutex::new(Vec::new()),
        };
        let r = &tracked;
        Ok(Self {
            http_requests: register(
                r,
                IntCounterVec::new(
                    Opts::new("http_requests_total", "HTTP requests answered, by route template, method and status class"),
                    &["route", "method", "status_class"],
                )?,
            )?,
            http_duration: register(
                r,
                HistogramVec::new(
                    HistogramOpts::new(
                        "http_request_duration_seconds",
                        "Time from the request's arrival to its response, by route template and method",
                    )
                    .buckets(LATENCY_BUCKETS.to_vec()),
                    &["route", "method"],
                )?,
            )?,
            http_in_flight: register(
                r,
                IntGauge::new("http_requests_in_flight", "HTTP requests being handled now")?,
            )?,
            problems: register(
                r,
                IntCounterVec::new(
                    Opts::new("http_problems_total", "Problem responses, by their stable code (docs/errors.md)"),
                    &["code"],
                )?,
            )?,
            tenant_requests: register(
                r,
                IntCounterVec::new(
                    Opts::new("answers_tenant_requests_total", "Authenticated requests per tenant (capped tenant labels)"),
                    &["tenant"],
                )?,
            )?,
            tenant_questions: register(
                r,
                IntCounterVec::new(
                    Opts::new("answers_tenant_questions_total", "Questions asked per tenant (capped tenant labels)"),
                    &["tenant"],
                )?,
            )?,
            tenant_rate_limited: register(
                r,
                IntCounterVec::new(
                    Opts::new("answers_tenant_rate_limited_total", "Requests refused by a rate limit or quota per tenant (capped tenant labels)"),
                    &["tenant"],
                )?,
            )?,
            pool_size: register(
                r,
                IntGaugeVec::new(
                    Opts::new("db_pool_connections", "Open connections of a database pool"),
                    &["pool"],
                )?,
            )?,
            pool_idle: register(
                r,
                IntGaugeVec::new(
                    Opts::new("db_pool_idle_connections", "Idle connections of a database pool"),
                    &["pool"],
                )?,
            )?,
            pool_pending: register(
                r,
                IntGauge::new("db_pool_pending_acquires", "Transactions of the API's pool being opened now: waiting for a connection or for their BEGIN (the pool's waiters)")?,
            )?,
            tenant_engine_calls: register(
                r,
                IntCounterVec::new(
                    Opts::new("answers_tenant_engine_calls_total", "Answer engine calls per tenant (capped tenant labels)"),
                    &["tenant"],
                )?,
            )?,
            tenant_engine_failures: register(
                r,
                IntCounterVec::new(
                    Opts::new("answers_tenant_engine_failures_total", "Answer engine calls per tenant that did not answer (capped tenant labels)"),
                    &["tenant"],
                )?,
            )?,
            projection_lag_events: register(
                r,
                IntGaugeVec::new(
                    Opts::new("answers_projection_lag_events", "Events of a projection's aggregate types in the store it has not applied"),
                    &["projection"],
                )?,
            )?,
            projection_lag_seconds: register(
                r,
                prometheus::GaugeVec::new(
                    Opts::new("answers_projection_lag_seconds", "When a projection is behind, the age of the newest event it applied; 0 when caught up"),
                    &["projection"],
                )?,
            )?,
            projection_applied: register(
                r,
                IntGaugeVec::new(
                    Opts::new("answers_projection_applied_events", "Events a projection applied since its last rebuild"),
                    &["projection"],
                )?,
            )?,
            projection_dead_letters: register(
                r,
                IntGaugeVec::new(
                    Opts::new("answers_projection_dead_letters_open", "Dead letters of a projection not yet resolved"),
                    &["projection"],
                )?,
            )?,
            projection_rebuild: register(
                r,
                prometheus::GaugeVec::new(
                    Opts::new("answers_projection_rebuild_progress_ratio", "A running rebuild's progress, 0 to 1 (the store position read over the one it reads up to); absent when none runs"),
                    &["projection"],
                )?,
            )?,
            projection_stalls: register(
                r,
                IntGaugeVec::new(
                    Opts::new("answers_projection_stall_recoveries", "Times a projection's consumer was found stalled (events waiting, none delivered for health.stall_after_ms) and recreated"),
                    &["projection"],
                )?,
            )?,
            relay_lag_events: register(
                r,
                IntGaugeVec::new(
                    Opts::new("answers_relay_lag_events", "Committed events the relay has not published"),
                    &["relay"],
                )?,
            )?,
            relay_published: register(
                r,
                IntGaugeVec::new(
                    Opts::new("answers_relay_published_events", "Events the relay has published (its checkpoint's count)"),
                    &["relay"],
                )?,
            )?,
            relay_lag_seconds: register(
                r,
                prometheus::GaugeVec::new(
                    Opts::new("answers_relay_lag_seconds", "How long the oldest committed event the relay has not published has waited; 0 when none waits"),
                    &["relay"],
                )?,
            )?,
            engine_calls: register(
                r,
                IntCounterVec::new(
                    Opts::new("answer_engine_calls_total", "Calls to an answer engine, by engine and outcome (`answered` or the failure kind: unavailable, rate_limited, circuit_open...)"),
                    &["engine", "outcome"],
                )?,
            )?,
            engine_latency: register(
                r,
                HistogramVec::new(
                    HistogramOpts::new(
                        "answer_engine_latency_seconds",
                        "Time an answer engine took to answer or fail, retries included",
                    )
                    .buckets(ENGINE_BUCKETS.to_vec()),
                    &["engine"],
                )?,
            )?,
            engine_breakers: register(
                r,
                IntGaugeVec::new(
                    Opts::new("answer_engine_breakers", "Kapa circuit breakers of this instance, by state"),
                    &["state"],
                )?,
            )?,
            answers: register(
                r,
                IntCounterVec::new(
                    Opts::new("answers_answers_total", "Questions' outcomes, by status (answered, failed, blocked and withheld by a guardrail) and the engine that answered (the library for fallbacks and reuse)"),
                    &["status", "engine"],
                )?,
            )?,
            quality_breached: register(
                r,
                IntGauge::new("answers_quality_breached_tenants", "Tenants recorded as below an answer-quality objective now (read at each scrape)")?,
            )?,
            sli_total: register(
                r,
                IntCounterVec::new(
                    Opts::new("answers_sli_events_total", "Events judged for a service level objective (docs/observability.md), by indicator"),
                    &["sli"],
                )?,
            )?,
            sli_good: register(
                r,
                IntCounterVec::new(
                    Opts::new("answers_sli_good_events_total", "Events judged good for a service level objective, by indicator"),
                    &["sli"],
                )?,
            )?,
            // Set once, from the configuration; the registry keeps it.
            _slo_target: {
                let g = register(
                    r,
                    prometheus::GaugeVec::new(
                        Opts::new("answers_slo_target_ratio", "The configured objective: the share of good events promised, by indicator (the alert rules read it)"),
                        &["sli"],
                    )?,
                )?;
                for o in crate::slo::objectives(slo) {
                    g.with_label_values(&[o.series.as_str()]).set(o.target);
                }
                g
            },
            tenants: TenantLabels {
                cap: tenant_label_cap,
                seen: Mutex::new(HashSet::new()),
            },
            pools,
            api_pool,
            tracked,
        })
    }

    /// Registers a component's own collectors (the command bus's, the Kapa engine's).
    /// `collectors` hands out the component's collectors (clones sharing their values).
    pub fn adopt(
        &self,
        collectors: impl Fn() -> Vec<Box<dyn prometheus::core::Collector>>,
    ) -> prometheus::Result<()> {
        for c in collectors() {
            self.tracked.registry.register(c)?;
        }
        self.tracked
            .all
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .extend(collectors());
        Ok(())
    }

    /// Sets how many tenants breach a quality objective now.
    pub fn observe_quality(&self, breached_tenants: i64) {
        self.quality_breached.set(breached_tenants);
    }

    /// One event judged for an objective.
    pub fn sli(&self, series: crate::slo::Series, good: bool) {
        let name = [series.as_str()];
        self.sli_total.with_label_values(&name).inc();
        if good {
            self.sli_good.with_label_values(&name).inc();
        }
    }

    /// The label `tenant` is counted under.
    pub fn tenant_label<'a>(&self, tenant: &'a str) -> &'a str {
        self.tenants.label(tenant)
    }

    /// An authenticated request of `tenant`.
    pub fn tenant_request(&self, tenant: &str) {
        self.tenant_requests
            .with_label_values(&[self.tenant_label(tenant)])
            .inc();
    }

    /// A question asked in `tenant`.
    pub fn question(&self, tenant: &str) {
        self.tenant_questions
            .with_label_values(&[self.tenant_label(tenant)])
            .inc();
    }

    /// A request of `tenant` refused by a rate limit or quota.
    pub fn rate_limited(&self, tenant: &str) {
        self.tenant_rate_limited
            .with_label_values(&[self.tenant_label(tenant)])
            .inc();
    }

    /// Counts a question's outcome.
    pub fn answer(&self, outcome: &commands::CommandOutcome) {
        if let Some(answer) = &outcome.answer {
            let status = serde_json::to_value(answer.status)
                .ok()
                .and_then(|v| v.as_str().map(str::to_string))
                .unwrap_or_else(|| "unknown".into());
            self.answers
                .with_label_values(&[&status, answer.engine.as_deref().unwrap_or("none")])
                .inc();
        }
    }

    /// Sets the breaker gauge: how many of this instance's breakers are in each state.
    pub fn observe_breakers(&self, states: &[&'static str]) {
        for state in ["closed", "open", "half_open"] {
            let n = states.iter().filter(|s| **s == state).count();
            self.engine_breakers
                .with_label_values(&[state])
                .set(i64::try_from(n).unwrap_or(i64::MAX));
        }
    }

    /// Sets the read side's gauges from the statuses read for this scrape.
    pub fn observe_read_side(
        &self,
        projections: &[projections::ProjectionStatus],
        relay: Option<&streaming::RelayStatus>,
    ) {
        for p in projections {
            let name = [p.projection.as_str()];
            self.projection_lag_events
                .with_label_values(&name)
                .set(p.lag_events);
            self.projection_lag_seconds
                .with_label_values(&name)
                .set(p.lag_seconds);
            self.projection_applied
                .with_label_values(&name)
                .set(p.applied_events);
            self.projection_dead_letters
                .with_label_values(&name)
                .set(p.open_dead_letters);
            self.projection_stalls
                .with_label_values(&name)
                .set(p.stall_recoveries);
            match &p.rebuild {
                Some(rebuild) => self
                    .projection_rebuild
                    .with_label_values(&name)
                    .set(rebuild.progress),
                None => {
                    let _ = self.projection_rebuild.remove_label_values(&name);
                }
            }
        }
        if let Some(relay) = relay {
            let name = [relay.name.as_str()];
            self.relay_lag_events
                .with_label_values(&name)
                .set(relay.lag_events);
            self.relay_published
                .with_label_values(&name)
                .set(relay.published);
            self.relay_lag_seconds
                .with_label_values(&name)
                .set(relay.lag_seconds.unwrap_or(0.0));
        }
    }

    /// The Prometheus text exposition of everything, pools sampled now.
    pub fn render(&self) -> Result<String, prometheus::Error> {
        for (name, pool) in &self.pools {
            self.pool_size
                .with_label_values(&[name])
                .set(i64::from(pool.size()));
            self.pool_idle
                .with_label_values(&[name])
                .set(i64::try_from(pool.num_idle()).unwrap_or(i64::MAX));
        }
        if let Some(api) = &self.api_pool {
            self.pool_pending.set(api.opening());
        }
        let families = self.tracked.registry.gather();
        let mut out = Vec::new();
        TextEncoder::new().encode(&families, &mut out)?;
        let mut text = String::from_utf8_lossy(&out).into_owned();
        let sampled: HashSet<&str> = families.iter().map(|f| f.name()).collect();
        for collector in self
            .tracked
            .all
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
        {
            for family in collector.collect() {
                if family.get_metric().is_empty() && !sampled.contains(family.name()) {
                    use prometheus::proto::MetricType;
                    let kind = match family.get_field_type() {
                        MetricType::COUNTER => "counter",
                        MetricType::GAUGE => "gauge",
                        MetricType::HISTOGRAM => "histogram",
                        MetricType::SUMMARY => "summary",
                        MetricType::UNTYPED => "untyped",
                    };
                    let help = family.help().replace('\\', "\\\\").replace('\n', "\\n");
                    text.push_str(&format!(
                        "# HELP {name} {help}\n# TYPE {name} {kind}\n",
                        name = family.name()
                    ));
                }
            }
        }
        Ok(text)
    }
}

/// The status class label: `2xx`, `4xx`...
fn status_class(status: u16) -> &'static str {
    match status {
        100..=199 => "1xx",
        200..=299 => "2xx",
        300..=399 => "3xx",
        400..=499 => "4xx",
        _ => "5xx",
    }
}

/// The problem code a response carried, left by `ApiError` in the response's extensions.
#[derive(Clone, Copy)]
pub struct ProblemCode(pub &'static str);

/// Counts and times every request by its route template (`/v1/conversations/{id}`, never the
/// raw path: one series per route, whatever the ids), method and status class; feeds the
/// service level indicators (`crate::slo`) from the same measurement.
pub async fn record(
    req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<impl MessageBody>, Error> {
    let metrics = req.app_data::<web::Data<Metrics>>().cloned();
    let slis = req
        .app_data::<web::Data<crate::slo::SliRecorder>>()
        .cloned();
    if metrics.is_none() && slis.is_none() {
        return next.call(req).await;
    }
    // The latency objective's threshold, from the SLO settings the application serves.
    let threshold = req
        .app_data::<web::Data<crate::config::SloSettings>>()
        .map_or(0.5, |s| s.latency_threshold_ms as f64 / 1000.0);
    let started = Instant::now();
    let method = req.method().clone();
    if let Some(m) = &metrics {
        m.http_in_flight.inc();
    }
    let result = next.call(req).await;
    let elapsed = started.elapsed().as_secs_f64();
    let (route, status) = match &result {
        Ok(response) => (
            response.request().match_pattern(),
            response.status().as_u16(),
        ),
        Err(e) => (None, e.as_response_error().status_code().as_u16()),
    };
    let judged = crate::slo::judge(
        threshold,
        method.as_str(),
        route.as_deref(),
        status,
        elapsed,
    );
    if let Some(slis) = &slis {
        slis.request(&judged, elapsed);
    }
    let Some(metrics) = metrics else {
        return result;
    };
    if let Some((series, good)) = judged.availability {
        metrics.sli(series, good);
    }
    if let Some(fast) = judged.latency {
        metrics.sli(crate::slo::Series::Latency, fast);
    }
    metrics.http_in_flight.dec();
    if let Ok(response) = &result {
        if let Some(code) = response.response().extensions().get::<ProblemCode>() {
            metrics.problems.with_label_values(&[code.0]).inc();
        }
    }
    let route = route.as_deref().unwrap_or("unmatched");
    metrics
        .http_requests
        .with_label_values(&[route, method.as_str(), status_class(status)])
        .inc();
    metrics
        .http_duration
        .with_label_values(&[route, method.as_str()])
        .observe(elapsed);
    result
}

/// Counts an authenticated request of `tenant` (once per request, however many credential
/// checks it makes).
pub fn count_tenant(req: &actix_web::HttpRequest, tenant: &str, user: &str) {
    if req.extensions().contains::<TenantCounted>() {
        return;
    }
    // The request's span (logs and the exported trace) names the tenant too, and the user by
    // the pseudonym the engine knows them by (never the id a provider gave them).
    let span = tracing::Span::current();
    span.record("tenant", tenant);
    if let (Some(bus), Ok(tenant_id)) = (
        req.app_data::<web::Data<commands::CommandBus>>(),
        domain::TenantId::parse(tenant),
    ) {
        span.record("user", bus.pseudonym(&tenant_id, user).as_str());
    }
    if let Some(metrics) = req.app_data::<web::Data<Metrics>>() {
        metrics.tenant_request(tenant);
    }
    req.extensions_mut().insert(TenantCounted);
}

/// Counts a request of `tenant` refused by a rate limit or quota.
pub fn count_rate_limited(req: &actix_web::HttpRequest, tenant: &str) {
    if let Some(metrics) = req.app_data::<web::Data<Metrics>>() {
        metrics.rate_limited(tenant);
    }
}

/// Counts a question asked in `tenant`.
pub fn count_question(req: &actix_web::HttpRequest, tenant: &str) {
    if let Some(metrics) = req.app_data::<web::Data<Metrics>>() {
        metrics.question(tenant);
    }
}

/// Counts a question's outcome (status, answering engine).
pub fn count_answer(req: &actix_web::HttpRequest, outcome: &commands::CommandOutcome) {
    if let Some(metrics) = req.app_data::<web::Data<Metrics>>() {
        metrics.answer(outcome);
    }
}

/// The request's tenant has been counted.
#[derive(Clone, Copy)]
struct TenantCounted;

/// An answer engine whose calls are counted and timed (`answer_engine_*`).
pub struct MeasuredEngine {
    name: &'static str,
    inner: std::sync::Arc<dyn domain::engine::AnswerEngine>,
    metrics: Option<std::sync::Arc<Metrics>>,
    slis: Option<std::sync::Arc<crate::slo::SliRecorder>>,
}

impl MeasuredEngine {
    /// Wraps `inner`, reporting as `name` to the metrics and the indicators that are on
    /// (`inner` itself when neither is).
    pub fn wrap(
        name: &'static str,
        inner: std::sync::Arc<dyn domain::engine::AnswerEngine>,
        metrics: Option<std::sync::Arc<Metrics>>,
        slis: Option<std::sync::Arc<crate::slo::SliRecorder>>,
    ) -> std::sync::Arc<dyn domain::engine::AnswerEngine> {
        if metrics.is_none() && slis.is_none() {
            return inner;
        }
        std::sync::Arc::new(Self {
            name,
            inner,
            metrics,
            slis,
        })
    }
}

#[async_trait::async_trait]
impl domain::engine::AnswerEngine for MeasuredEngine {
    async fn answer(
        &self,
        request: domain::engine::AnswerRequest,
        chunks: Option<std::sync::Arc<dyn domain::engine::ChunkSink>>,
    ) -> Result<domain::engine::EngineAnswer, domain::engine::EngineFailure> {
        let started = Instant::now();
        let tenant = request.tenant_id.clone();
        let result = self.inner.answer(request, chunks).await;
        let elapsed = started.elapsed().as_secs_f64();
        let outcome = match &result {
            Ok(_) => "answered",
            Err(failure) => failure.kind.as_str(),
        };
        if let Some(slis) = &self.slis {
            slis.engine_call(result.is_ok(), elapsed);
        }
        if let Some(metrics) = &self.metrics {
            metrics
                .engine_calls
                .with_label_values(&[self.name, outcome])
                .inc();
            metrics
                .engine_latency
                .with_label_values(&[self.name])
                .observe(elapsed);
            let label = [metrics.tenant_label(&tenant)];
            metrics.tenant_engine_calls.with_label_values(&label).inc();
            if result.is_err() {
                metrics
                    .tenant_engine_failures
                    .with_label_values(&label)
                    .inc();
            }
        }
        result
    }
}

/// The value of the Prometheus series `name` whose labels include every pair of `labels`, in
/// the text exposition `text` (what `/metrics` serves): for the benchmark and the tests.
pub fn metric_value(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter(|l| l.starts_with(&format!("{name}{{")) || l.starts_with(&format!("{name} ")))
        .find(|l| {
            labels
                .iter()
                .all(|(k, v)| l.contains(&format!("{k}=\"{v}\"")))
        })
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tenant_labels_are_capped_and_stable() {
        let labels = TenantLabels {
            cap: 3,
            seen: Mutex::new(HashSet::new()),
        };
        let got: Vec<&str> = ["a", "b", "c", "d", "a", "e"]
            .iter()
            .map(|t| labels.label(t))
            .collect();
        assert_eq!(got, ["a", "b", "c", "other", "a", "other"]);
    }

    #[test]
    fn status_classes() {
        assert_eq!(
            [200, 201, 304, 404, 429, 500, 503].map(status_class),
            ["2xx", "2xx", "3xx", "4xx", "4xx", "5xx", "5xx"]
        );
    }
}
