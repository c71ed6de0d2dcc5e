use domain::Code;
use std::time::Duration;

use actix_web::{get, web, HttpResponse};
use sqlx::PgPool;

use crate::dto::HealthStatus;
use crate::problem::ApiError;

/// The process is up.
#[utoipa::path(get, path = "/health/live", tag = "health",
    responses((status = 200, body = HealthStatus)))]
#[get("/health/live")]
pub async fn live() -> HttpResponse {
    HttpResponse::Ok().json(HealthStatus {
        status: "ok".into(),
    })
}

/// The process can serve: it is not stopping, the database answers the owner's pool and the
/// API's, every migration this build knows is applied, and the broker answers when this process
/// runs the relay or projections on Kafka. A 503 names the checks that failed (their causes are
/// logged).
#[utoipa::path(get, path = "/health/ready", tag = "health",
    responses((status = 200, body = HealthStatus),
              (status = 503, body = crate::problem::Problem, content_type = "application/problem+json")))]
#[get("/health/ready")]
pub async fn ready(
    pool: web::Data<PgPool>,
    tenants: web::Data<event_store::TenantPool>,
    kafka: web::Data<streaming::KafkaSettings>,
    lifecycle: Option<web::Data<crate::lifecycle::Lifecycle>>,
) -> Result<HttpResponse, ApiError> {
    if lifecycle.is_some_and(|l| l.is_draining()) {
        return Err(ApiError::new(
            Code::NotReady,
            "not ready: draining (the instance is stopping)",
        ));
    }
    let migrations = probe(async {
        let applied: i64 =
            sqlx::query_scalar("SELECT count(*) FROM _sqlx_migrations WHERE success")
                .fetch_one(pool.get_ref())
                .await
                .map_err(|e| e.to_string())?;
        let known = event_store::MIGRATOR.iter().count() as i64;
        if applied < known {
            return Err(format!(
                "{applied} of {known} applied (run `answers migrate`)"
            ));
        }
        Ok(())
    });
    let (core, migrations) = tokio::join!(probe_core(&pool, &tenants, &kafka), migrations);
    let failed: Vec<(&str, String)> = [
        ("database (owner)", core.owner.0),
        ("database (api role)", core.api.0),
        ("migrations", migrations.0),
        // Only a process that relays or projects needs the broker to do its work: an API
        // process without them serves every command and read while the broker is away.
        (
            "broker",
            core.broker
                .filter(|_| kafka.relay.in_process || kafka.projections_in_process)
                .map_or(Ok(()), |b| b.0),
        ),
    ]
    .into_iter()
    .filter_map(|(what, result)| result.err().map(|e| (what, e)))
    .collect();
    if failed.is_empty() {
        return Ok(HttpResponse::Ok().json(HealthStatus {
            status: "ready".into(),
        }));
    }
    let named: Vec<&str> = failed.iter().map(|(what, _)| *what).collect();
    let why: Vec<String> = failed
        .iter()
        .map(|(what, e)| format!("{what}: {e}"))
        .collect();
    // The causes go to the log; this route answers anyone, so it names the checks only.
    tracing::warn!(failed = %why.join("; "), "not ready");
    Err(ApiError::new(
        Code::NotReady,
        format!("not ready: {}", named.join(", ")),
    ))
}

/// How long any one check may take.
const CHECK_WITHIN: Duration = Duration::from_secs(2);

/// A check's outcome (the cause when it failed) and how long it took, in milliseconds.
pub(crate) type Probe = (Result<(), String>, f64);

/// Runs `check` within [`CHECK_WITHIN`], timing it.
/// Sets the read side's gauges (projection lag, relay) from the database. A failure leaves them
/// at their last values and is logged; the rest of the metrics are still served.
pub(crate) async fn observe_read_side(
    registry: &crate::metrics::Metrics,
    pool: &PgPool,
    kafka: &streaming::KafkaSettings,
) {
    match read_side(pool, kafka).await {
        Ok((statuses, relay)) => registry.observe_read_side(&statuses, relay.as_ref()),
        Err(error) => tracing::warn!(%error, "metrics: the read side's status could not be read"),
    }
}

pub(crate) async fn probe<F, T, E>(check: F) -> Probe
where
    F: std::future::Future<Output = Result<T, E>>,
    E: std::fmt::Display,
{
    let started = std::time::Instant::now();
    let result = match tokio::time::timeout(CHECK_WITHIN, check).await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err(format!("no answer within {CHECK_WITHIN:?}")),
    };
    (result, started.elapsed().as_secs_f64() * 1000.0)
}

/// What serving needs, checked at once: both pools, and the broker when Kafka is the transport.
struct CoreProbes {
    owner: Probe,
    api: Probe,
    /// `None` when Kafka is not the transport.
    broker: Option<Probe>,
}

async fn probe_core(
    pool: &PgPool,
    tenants: &event_store::TenantPool,
    kafka: &streaming::KafkaSettings,
) -> CoreProbes {
    let owner = probe(sqlx::query("SELECT 1").execute(pool));
    // No tenant table is read: the API role's connection itself is what is checked.
    let api = probe(sqlx::query("SELECT 1").execute(tenants.unscoped()));
    let broker = async {
        if kafka.enabled {
            Some(probe(streaming::reachable(kafka, CHECK_WITHIN)).await)
        } else {
            None
        }
    };
    let (owner, api, broker) = tokio::join!(owner, api, broker);
    CoreProbes { owner, api, broker }
}

/// Every projection's status and the relay's, read now (a few indexed counts).
pub(crate) async fn read_side(
    pool: &PgPool,
    kafka: &streaming::KafkaSettings,
) -> Result<
    (
        Vec<projections::ProjectionStatus>,
        Option<streaming::RelayStatus>,
    ),
    sqlx::Error,
> {
    let mut statuses = Vec::new();
    for projection in projections::all() {
        statuses.push(projections::ProjectionStatus::load(pool, projection.as_ref()).await?);
    }
    let relay = streaming::Relay::status(pool, &kafka.relay.name).await?;
    Ok((statuses, relay))
}

/// Prometheus metrics, text exposition format (docs/metrics.md). Platform operators only: the
/// per-tenant series name tenants.
#[utoipa::path(get, path = "/metrics", tag = "health",
    responses((status = 200, description = "Prometheus text format", content_type = "text/plain; version=0.0.4", body = String),
              crate::routes::CommandProblems),
    security(("platform" = [])))]
#[get("/metrics")]
pub async fn metrics(
    metrics: Option<web::Data<crate::metrics::Metrics>>,
    pool: web::Data<PgPool>,
    kafka: web::Data<streaming::KafkaSettings>,
    engines: web::Data<crate::startup::EngineStatus>,
    _operator: crate::auth::PlatformOperator,
) -> Result<HttpResponse, ApiError> {
    let Some(metrics) = metrics else {
        return Err(ApiError::new(
            Code::RouteNotFound,
            "metrics are off in this deployment (metrics.enabled)",
        ));
    };
    if let Some(kapa) = &engines.kapa {
        let states: Vec<&'static str> = kapa.breakers().iter().map(|b| b.state.as_str()).collect();
        metrics.observe_breakers(&states);
    }
    observe_read_side(&metrics, &pool, &kafka).await;
    match crate::quality::breached_tenants(&pool).await {
        Ok(n) => metrics.observe_quality(n),
        Err(error) => {
            tracing::warn!(%error, "metrics: tenants in quality breach could not be counted")
        }
    }
    let text = metrics.render().map_err(|e| {
        ApiError::infrastructure(Code::InternalError, "the metrics could not be encoded", &e)
    })?;
    Ok(HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4; charset=utf-8")
        .body(text))
}

/// When this process started, for `uptime_seconds`.
pub struct Started(pub std::time::Instant);

/// One dependency's state.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct DependencyHealth {
    pub name: String,
    /// `up`, `degraded`, `down` or `disabled` (not used by this deployment).
    pub status: String,
    /// How long the check took.
    pub latency_ms: Option<f64>,
    /// Breakers, open ones, ... (no secrets, no connection strings).
    pub detail: Option<String>,
}

/// How far one consumer of the event store is behind.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct LagHealth {
    pub name: String,
    /// `ok` or `behind` (past `health.max_lag_events` or `health.max_lag_seconds`).
    pub status: String,
    pub lag_events: i64,
    pub lag_seconds: Option<f64>,
    pub open_dead_letters: Option<i64>,
    /// How often its consumer was found stalled and recreated (projections).
    pub stall_recoveries: Option<i64>,
    pub last_stall_at: Option<chrono::DateTime<chrono::Utc>>,
}

/// One database pool's saturation.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct PoolUse {
    pub name: String,
    pub open: u32,
    pub idle: usize,
    pub max: u32,
    /// Transactions waiting for a connection (the API's pool only).
    pub pending: Option<i64>,
}

/// What the process uses (Linux: from /proc, as the `process_*` metrics).
#[derive(Debug, Default, serde::Serialize, utoipa::ToSchema)]
pub struct ResourceUse {
    /// CPU time used since start, whole seconds (as `process_cpu_seconds_total`).
    pub cpu_seconds: Option<f64>,
    pub resident_memory_bytes: Option<f64>,
    pub open_fds: Option<f64>,
    pub max_fds: Option<f64>,
    pub threads: Option<f64>,
    pub pools: Vec<PoolUse>,
}

impl ResourceUse {
    fn now(pool: &PgPool, tenants: &event_store::TenantPool) -> Self {
        let mut out = Self::default();
        #[cfg(target_os = "linux")]
        {
            use prometheus::core::Collector;
            let process = prometheus::process_collector::ProcessCollector::for_self();
            for family in process.collect() {
                let value = family.get_metric().first().map(|m| {
                    if family.get_field_type() == prometheus::proto::MetricType::COUNTER {
                        m.get_counter().get_value()
                    } else {
                        m.get_gauge().get_value()
                    }
                });
                match family.name() {
                    "process_cpu_seconds_total" => out.cpu_seconds = value,
                    "process_resident_memory_bytes" => out.resident_memory_bytes = value,
                    "process_open_fds" => out.open_fds = value,
                    "process_max_fds" => out.max_fds = value,
                    "process_threads" => out.threads = value,
                    _ => {}
                }
            }
        }
        let api = tenants.unscoped();
        out.pools = vec![
            PoolUse {
                name: "owner".into(),
                open: pool.size(),
                idle: pool.num_idle(),
                max: pool.options().get_max_connections(),
                pending: None,
            },
            PoolUse {
                name: "api".into(),
                open: api.size(),
                idle: api.num_idle(),
                max: api.options().get_max_connections(),
                pending: Some(tenants.opening()),
            },
        ];
        out
    }
}

/// Everything an operator looks at first.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct HealthDetails {
    /// `up` (all well), `degraded` (serving; something needs attention) or `down` (cannot
    /// serve: the database does not answer).
    pub status: String,
    pub version: String,
    pub uptime_seconds: f64,
    pub dependencies: Vec<DependencyHealth>,
    /// The relay, when it has published anything.
    pub relay: Option<LagHealth>,
    pub projections: Vec<LagHealth>,
    /// The process and its pools now (the broker's lag is `relay`).
    pub resources: ResourceUse,
}

impl DependencyHealth {
    fn probed(name: &str, (result, latency): Probe) -> Self {
        Self {
            name: name.to_string(),
            status: if result.is_ok() { "up" } else { "down" }.to_string(),
            latency_ms: Some(latency),
            detail: result.err(),
        }
    }

    fn disabled(name: &str, detail: Option<&str>) -> Self {
        Self {
            name: name.to_string(),
            status: "disabled".into(),
            latency_ms: None,
            detail: detail.map(str::to_string),
        }
    }
}

/// Each dependency with its status and latency, the relay's and every projection's lag
/// against the thresholds, version and uptime (platform operators: it names internals).
#[utoipa::path(get, path = "/health/details", tag = "health",
    responses((status = 200, body = HealthDetails), crate::routes::CommandProblems),
    security(("platform" = [])))]
#[get("/health/details")]
#[allow(clippy::too_many_arguments)]
pub async fn details(
    pool: web::Data<PgPool>,
    tenants: web::Data<event_store::TenantPool>,
    kafka: web::Data<streaming::KafkaSettings>,
    limiter: web::Data<crate::rate_limit::RateLimiter>,
    engines: web::Data<crate::startup::EngineStatus>,
    thresholds: web::Data<crate::config::HealthSettings>,
    started: web::Data<Started>,
    _operator: crate::auth::PlatformOperator,
) -> Result<HttpResponse, ApiError> {
    let redis = probe(async {
        if limiter.redis_answers().await {
            Ok(())
        } else {
            Err("does not answer (rate limits follow rate_limits.on_redis_down)")
        }
    });
    let (core, redis) = tokio::join!(probe_core(&pool, &tenants, &kafka), redis);
    let database_down = core.owner.0.is_err() || core.api.0.is_err();
    let mut dependencies = vec![
        DependencyHealth::probed("postgres (owner)", core.owner),
        DependencyHealth::probed("postgres (api role)", core.api),
        DependencyHealth::probed("redis", redis),
        match core.broker {
            Some(check) => DependencyHealth::probed("kafka", check),
            None => DependencyHealth::disabled("kafka", Some("kafka.enabled is false")),
        },
    ];
    dependencies.push(match &engines.kapa {
        None => DependencyHealth::disabled("kapa", None),
        Some(kapa) => {
            let open: Vec<String> = kapa
                .breakers()
                .into_iter()
                .filter(|b| b.state.as_str() != "closed")
                .map(|b| format!("{} {}", b.project_id, b.state.as_str()))
                .collect();
            DependencyHealth {
                name: "kapa".into(),
                status: if open.is_empty() { "up" } else { "degraded" }.into(),
                latency_ms: None,
                detail: (!open.is_empty()).then(|| format!("breakers: {}", open.join(", "))),
            }
        }
    });
    let (projections, relay) = if database_down {
        (Vec::new(), None)
    } else {
        let (statuses, relay) = read_side(&pool, &kafka)
            .await
            .map_err(crate::routes::conversations::read_error)?;
        let behind = |events: i64, seconds: f64| {
            if events > thresholds.max_lag_events
                || (events > 0 && seconds > thresholds.max_lag_seconds)
            {
                "behind"
            } else {
                "ok"
            }
        };
        let projections = statuses
            .into_iter()
            .map(|p| LagHealth {
                status: behind(p.lag_events, p.lag_seconds).into(),
                name: p.projection,
                lag_events: p.lag_events,
                lag_seconds: Some(p.lag_seconds),
                open_dead_letters: Some(p.open_dead_letters),
                stall_recoveries: Some(p.stall_recoveries),
                last_stall_at: p.last_stall_at,
            })
            .collect::<Vec<_>>();
        let relay = relay.map(|r| LagHealth {
            status: behind(r.lag_events, r.lag_seconds.unwrap_or(0.0)).into(),
            name: r.name,
            lag_events: r.lag_events,
            lag_seconds: r.lag_seconds,
            open_dead_letters: None,
            stall_recoveries: None,
            last_stall_at: None,
        });
        (projections, relay)
    };
    let attention = dependencies
        .iter()
        .any(|d| d.status == "down" || d.status == "degraded")
        || projections
            .iter()
            .chain(relay.iter())
            .any(|l| l.status != "ok");
    let status = if database_down {
        "down"
    } else if attention {
        "degraded"
    } else {
        "up"
    };
    Ok(HttpResponse::Ok().json(HealthDetails {
        status: status.into(),
        version: env!("CARGO_PKG_VERSION").into(),
        uptime_seconds: started.0.elapsed().as_secs_f64(),
        dependencies,
        relay,
        projections,
        resources: ResourceUse::now(&pool, &tenants),
    }))
}
