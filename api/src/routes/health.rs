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
    metrics: web::Data<crate::metrics::Metrics>,
    pool: web::Data<PgPool>,
    kafka: web::Data<streaming::KafkaSettings>,
    _operator: crate::auth::PlatformOperator,
) -> Result<HttpResponse, ApiError> {
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
