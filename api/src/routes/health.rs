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

/// The process can serve: its database answers, to the owner's pool and to the API's.
#[utoipa::path(get, path = "/health/ready", tag = "health",
    responses((status = 200, body = HealthStatus),
              (status = 503, body = crate::problem::Problem, content_type = "application/problem+json")))]
#[get("/health/ready")]
pub async fn ready(
    pool: web::Data<PgPool>,
    tenants: web::Data<event_store::TenantPool>,
) -> Result<HttpResponse, ApiError> {
    let check = tokio::time::timeout(Duration::from_secs(2), async {
        sqlx::query_scalar::<_, i32>("SELECT 1")
            .fetch_one(pool.get_ref())
            .await?;
        // No tenant table is read: the API role's connection itself is what is checked.
        sqlx::query_scalar::<_, i32>("SELECT 1")
            .fetch_one(tenants.unscoped())
            .await
    })
    .await;
    match check {
        Ok(Ok(_)) => Ok(HttpResponse::Ok().json(HealthStatus {
            status: "ready".into(),
        })),
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "readiness check failed");
            Err(not_ready())
        }
        Err(_) => Err(not_ready()),
    }
}

fn not_ready() -> ApiError {
    ApiError::new(Code::NotReady, "the database does not answer")
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
    _operator: crate::auth::PlatformOperator,
) -> Result<HttpResponse, ApiError> {
    let text = metrics.render().map_err(|e| {
        ApiError::infrastructure(Code::InternalError, "the metrics could not be encoded", &e)
    })?;
    Ok(HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4; charset=utf-8")
        .body(text))
}
