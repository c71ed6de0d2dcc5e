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

/// The process can serve: the database answers the owner's pool and the API's, every migration
/// this build knows is applied, and the broker answers when Kafka is the transport. A 503 names
/// the checks that failed (their causes are logged).
#[utoipa::path(get, path = "/health/ready", tag = "health",
    responses((status = 200, body = HealthStatus),
              (status = 503, body = crate::problem::Problem, content_type = "application/problem+json")))]
#[get("/health/ready")]
pub async fn ready(
    pool: web::Data<PgPool>,
    tenants: web::Data<event_store::TenantPool>,
    kafka: web::Data<streaming::KafkaSettings>,
) -> Result<HttpResponse, ApiError> {
    const WITHIN: Duration = Duration::from_secs(2);
    let timed = |what: &'static str,
                 check: Result<Result<(), String>, tokio::time::error::Elapsed>| {
        match check {
            Ok(Ok(())) => None,
            Ok(Err(e)) => Some((what, e)),
            Err(_) => Some((what, format!("no answer within {WITHIN:?}"))),
        }
    };
    let owner = tokio::time::timeout(WITHIN, async {
        sqlx::query_scalar::<_, i32>("SELECT 1")
            .fetch_one(pool.get_ref())
            .await
            .map(|_| ())
            .map_err(|e| e.to_string())
    });
    // No tenant table is read: the API role's connection itself is what is checked.
    let api = tokio::time::timeout(WITHIN, async {
        sqlx::query_scalar::<_, i32>("SELECT 1")
            .fetch_one(tenants.unscoped())
            .await
            .map(|_| ())
            .map_err(|e| e.to_string())
    });
    let migrations = tokio::time::timeout(WITHIN, async {
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
    let broker = async {
        if !kafka.enabled {
            return Ok(Ok(()));
        }
        tokio::time::timeout(WITHIN + Duration::from_millis(500), async {
            streaming::reachable(&kafka, WITHIN)
                .await
                .map_err(|e| e.to_string())
        })
        .await
    };
    let (owner, api, migrations, broker) = tokio::join!(owner, api, migrations, broker);
    let failed: Vec<(&str, String)> = [
        timed("database (owner)", owner),
        timed("database (api role)", api),
        timed("migrations", migrations),
        timed("broker", broker),
    ]
    .into_iter()
    .flatten()
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
    // The read side's positions, read now (a few indexed counts); a failure leaves the gauges
    // at their last values and is logged, the rest is still served.
    let read_side = async {
        let mut statuses = Vec::new();
        for projection in projections::all() {
            statuses.push(projections::ProjectionStatus::load(&pool, projection.as_ref()).await?);
        }
        let relay = streaming::Relay::status(&pool, &kafka.relay.name).await?;
        Ok::<_, sqlx::Error>((statuses, relay))
    };
    match read_side.await {
        Ok((statuses, relay)) => metrics.observe_read_side(&statuses, relay.as_ref()),
        Err(error) => tracing::warn!(%error, "metrics: the read side's status could not be read"),
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
}

async fn timed<F, T, E>(check: F) -> (Result<T, String>, f64)
where
    F: std::future::Future<Output = Result<T, E>>,
    E: std::fmt::Display,
{
    let started = std::time::Instant::now();
    let result = match tokio::time::timeout(Duration::from_secs(2), check).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err("no answer within 2 s".to_string()),
    };
    (result, started.elapsed().as_secs_f64() * 1000.0)
}

fn dependency(name: &str, check: (Result<(), String>, f64)) -> DependencyHealth {
    let (result, latency) = check;
    DependencyHealth {
        name: name.to_string(),
        status: if result.is_ok() { "up" } else { "down" }.to_string(),
        latency_ms: Some(latency),
        detail: result.err(),
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
    let owner = timed(sqlx::query("SELECT 1").execute(pool.get_ref()));
    let api = timed(sqlx::query("SELECT 1").execute(tenants.unscoped()));
    let redis = timed(async {
        if limiter.redis_answers().await {
            Ok(())
        } else {
            Err("does not answer (rate limits follow rate_limits.on_redis_down)")
        }
    });
    let broker = async {
        if kafka.enabled {
            Some(timed(streaming::reachable(&kafka, Duration::from_secs(2))).await)
        } else {
            None
        }
    };
    let (owner, api, redis, broker) = tokio::join!(owner, api, redis, broker);
    let database_down = owner.0.is_err() || api.0.is_err();
    let mut dependencies = vec![
        dependency("postgres (owner)", (owner.0.map(|_| ()), owner.1)),
        dependency("postgres (api role)", (api.0.map(|_| ()), api.1)),
        dependency("redis", redis),
    ];
    dependencies.push(match broker {
        Some(check) => dependency("kafka", check),
        None => DependencyHealth {
            name: "kafka".into(),
            status: "disabled".into(),
            latency_ms: None,
            detail: Some("kafka.enabled is false".into()),
        },
    });
    dependencies.push(match &engines.kapa {
        None => DependencyHealth {
            name: "kapa".into(),
            status: "disabled".into(),
            latency_ms: None,
            detail: None,
        },
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
    let mut projections = Vec::new();
    let mut relay = None;
    if !database_down {
        for projection in projections::all() {
            let p = projections::ProjectionStatus::load(&pool, projection.as_ref())
                .await
                .map_err(crate::routes::conversations::read_error)?;
            let behind = p.lag_events > thresholds.max_lag_events
                || (p.lag_events > 0 && p.lag_seconds > thresholds.max_lag_seconds);
            projections.push(LagHealth {
                name: p.projection,
                status: if behind { "behind" } else { "ok" }.into(),
                lag_events: p.lag_events,
                lag_seconds: Some(p.lag_seconds),
                open_dead_letters: Some(p.open_dead_letters),
            });
        }
        relay = streaming::Relay::status(&pool, &kafka.relay.name)
            .await
            .map_err(crate::routes::conversations::read_error)?
            .map(|r| LagHealth {
                name: r.name,
                status: if r.lag_events > thresholds.max_lag_events {
                    "behind"
                } else {
                    "ok"
                }
                .into(),
                lag_events: r.lag_events,
                lag_seconds: None,
                open_dead_letters: None,
            });
    }
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
    }))
}
