//! Operating the read side (admin only): projection status, rebuilds, dead letters.
use domain::Code;
use std::sync::Arc;

use actix_web::{get, post, web, HttpResponse};
use domain::Role;
use projections::{DeadLetter, Projection, ProjectionStatus};
use projections::{RebuildError, RetryError};
use serde::{Deserialize, Serialize};
use sqlx::PgPool;
use streaming::{KafkaSettings, Relay, RelayStatus};
use utoipa::{IntoParams, ToSchema};

use crate::auth::{Authenticated, PlatformOperator};
use crate::problem::ApiError;
use crate::routes::conversations::read_error;
use crate::routes::CommandProblems;

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(status)
        .service(start_rebuild)
        .service(dead_letters)
        .service(retry);
}

/// Only the tenant's admin operates its read side and sees its engine's state.
pub(crate) fn admin(auth: &Authenticated) -> Result<(), ApiError> {
    if auth.0.role == Role::Admin {
        Ok(())
    } else {
        Err(ApiError::new(
            Code::Forbidden,
            "only an admin operates the read side and the engine",
        ))
    }
}

fn find(name: &str) -> Result<Arc<dyn Projection>, ApiError> {
    projections::find(name).ok_or_else(|| {
        ApiError::new(
            Code::ProjectionNotFound,
            format!("no projection named `{name}`"),
        )
    })
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ReadSideStatus {
    pub projections: Vec<ProjectionStatus>,
    /// The Kafka relay's position; absent until it first ran.
    #[schema(value_type = Option<Object>)]
    pub relay: Option<RelayStatus>,
}

/// Every projection's position, lag and last error, and the relay's position. These serve
/// every tenant: the platform operator credential, not a tenant token, is needed.
#[utoipa::path(get, path = "/v1/admin/projections", tag = "admin",
    responses((status = 200, body = ReadSideStatus), CommandProblems), security(("platform" = [])))]
#[get("/admin/projections")]
pub async fn status(
    pool: web::Data<PgPool>,
    kafka: web::Data<KafkaSettings>,
    _operator: PlatformOperator,
) -> Result<HttpResponse, ApiError> {
    let mut list = Vec::new();
    for p in projections::all() {
        list.push(
            ProjectionStatus::load(&pool, p.as_ref())
                .await
                .map_err(read_error)?,
        );
    }
    let relay = Relay::status(&pool, &kafka.relay.name)
        .await
        .map_err(read_error)?;
    Ok(HttpResponse::Ok().json(ReadSideStatus {
        projections: list,
        relay,
    }))
}

/// Rebuild a projection from position 0 of the event store into a shadow table and swap it in;
/// reads keep answering meanwhile. Runs in the background: follow it in the status. A
/// projection serves every tenant: the platform operator credential is needed.
#[utoipa::path(post, path = "/v1/admin/projections/{name}/rebuild", tag = "admin",
    params(("name" = String, Path)),
    responses((status = 202, description = "Rebuild started"), CommandProblems), security(("platform" = [])))]
#[post("/admin/projections/{name}/rebuild")]
pub async fn start_rebuild(
    pool: web::Data<PgPool>,
    _operator: PlatformOperator,
    name: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let projection = find(&name)?;
    let pool = pool.get_ref().clone();
    tokio::spawn(async move {
        match projections::rebuild(&pool, projection.as_ref()).await {
            Ok(report) => tracing::info!(?report, "rebuild finished"),
            Err(RebuildError::InProgress) => tracing::info!("a rebuild was already running"),
            Err(e) => {
                tracing::error!(error = %projections::error_chain(&e), "rebuild failed")
            }
        }
    });
    Ok(HttpResponse::Accepted()
        .json(serde_json::json!({"projection": name.into_inner(), "status": "started"})))
}

#[derive(Debug, Deserialize, IntoParams)]
pub struct DeadLetterQuery {
    /// Also list the letters already resolved by a retry.
    pub include_resolved: Option<bool>,
}

/// The tenant's dead letters: events a projection could not apply.
#[utoipa::path(get, path = "/v1/admin/dead-letters", tag = "admin", params(DeadLetterQuery),
    responses((status = 200, body = Vec<DeadLetter>), CommandProblems), security(("bearer" = [])))]
#[get("/admin/dead-letters")]
pub async fn dead_letters(
    tenants: web::Data<event_store::TenantPool>,
    auth: Authenticated,
    query: web::Query<DeadLetterQuery>,
) -> Result<HttpResponse, ApiError> {
    admin(&auth)?;
    let mut tx = super::tenant_tx(&tenants, &auth.0.tenant_id).await?;
    let letters = projections::dead_letters::list(
        &mut tx,
        &auth.0.tenant_id,
        query.include_resolved.unwrap_or(false),
    )
    .await
    .map_err(read_error)?;
    super::end_read(tx);
    Ok(HttpResponse::Ok().json(letters))
}

/// Apply a dead letter again (after the projection was fixed); resolved when it applies.
#[utoipa::path(post, path = "/v1/admin/dead-letters/{id}/retry", tag = "admin", params(("id" = i64, Path)),
    responses((status = 200, body = DeadLetter), CommandProblems), security(("bearer" = [])))]
#[post("/admin/dead-letters/{id}/retry")]
pub async fn retry(
    pool: web::Data<PgPool>,
    auth: Authenticated,
    id: web::Path<i64>,
) -> Result<HttpResponse, ApiError> {
    admin(&auth)?;
    // Applying a letter writes the projection's read model, which serves every tenant: the
    // owner's pool, with the letter looked up by this tenant's id.
    match projections::dead_letters::retry(&pool, &projections::all(), &auth.0.tenant_id, *id).await
    {
        Ok(letter) => Ok(HttpResponse::Ok().json(letter)),
        Err(RetryError::NotFound) => Err(ApiError::new(
            Code::DeadLetterNotFound,
            "no open dead letter with that id",
        )),
        Err(RetryError::StillFailing(e)) => Err(ApiError::new(Code::DeadLetterStillFailing, e)),
        Err(RetryError::Database(e)) => Err(read_error(e)),
    }
}
