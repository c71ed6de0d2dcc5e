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

/// The process can serve: its database answers.
#[utoipa::path(get, path = "/health/ready", tag = "health",
    responses((status = 200, body = HealthStatus),
              (status = 503, body = crate::problem::Problem, content_type = "application/problem+json")))]
#[get("/health/ready")]
pub async fn ready(pool: web::Data<PgPool>) -> Result<HttpResponse, ApiError> {
    let check = tokio::time::timeout(
        Duration::from_secs(2),
        sqlx::query_scalar::<_, i32>("SELECT 1").fetch_one(pool.get_ref()),
    )
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
