use actix_web::{delete, get, patch, post, web, HttpResponse};
use commands::{CommandBus, CommandOutcome};
use domain::knowledge_source::{SourceCommand, SourceStatus};
use domain::Code;
use uuid::Uuid;

use crate::auth::Authenticated;
use crate::dto::*;
use crate::problem::ApiError;
use crate::routes::{Caller, CommandProblems};

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(add)
        .service(list)
        .service(get_source)
        .service(update)
        .service(remove)
        .service(request_sync)
        .service(start_sync)
        .service(complete_sync)
        .service(fail_sync);
}

async fn send(
    bus: &CommandBus,
    caller: &Caller,
    id: Uuid,
    body: &impl serde::Serialize,
    command: SourceCommand,
) -> Result<CommandOutcome, ApiError> {
    Ok(bus.source(&caller.context(body), id, command).await?)
}

/// Register a knowledge source.
#[utoipa::path(post, path = "/v1/sources", tag = "sources", request_body = AddSourceRequest,
    params(("Idempotency-Key" = Option<String>, Header, description = "Retry-safe key, unique per user", min_length = 1, max_length = 255, pattern = "^[!-~]+$")),
    responses((status = 201, body = CommandOutcome), CommandProblems), security(("bearer" = [])))]
#[post("/sources")]
pub async fn add(
    bus: web::Data<CommandBus>,
    caller: Caller,
    body: web::Json<AddSourceRequest>,
) -> Result<HttpResponse, ApiError> {
    let command = SourceCommand::Add {
        kind: body.kind.into(),
        name: body.name.clone(),
        location: body.location.clone(),
        settings: body.settings.clone(),
    };
    let outcome = send(&bus, &caller, Uuid::now_v7(), &*body, command).await?;
    Ok(HttpResponse::Created().json(outcome))
}

/// A knowledge source as its events say it is now (any role).
#[utoipa::path(get, path = "/v1/sources/{id}", tag = "sources", params(("id" = Uuid, Path)),
    responses((status = 200, body = SourceView), CommandProblems), security(("bearer" = [])))]
#[get("/sources/{id}")]
pub async fn get_source(
    bus: web::Data<CommandBus>,
    auth: Authenticated,
    id: web::Path<Uuid>,
) -> Result<HttpResponse, ApiError> {
    let (source, version) = bus.source_state(&auth.0.tenant_id, *id).await?;
    if source.status == SourceStatus::NotAdded {
        return Err(ApiError::new(
            Code::SourceNotFound,
            "no such knowledge source",
        ));
    }
    Ok(HttpResponse::Ok().json(SourceView::new(*id, source, version)))
}

#[utoipa::path(patch, path = "/v1/sources/{id}", tag = "sources", request_body = UpdateSourceRequest,
    params(("id" = Uuid, Path), ("Idempotency-Key" = Option<String>, Header, description = "Retry-safe key, unique per user", min_length = 1, max_length = 255, pattern = "^[!-~]+$")),
    responses((status = 200, body = CommandOutcome), CommandProblems), security(("bearer" = [])))]
#[patch("/sources/{id}")]
pub async fn update(
    bus: web::Data<CommandBus>,
    caller: Caller,
    id: web::Path<Uuid>,
    body: web::Json<UpdateSourceRequest>,
) -> Result<HttpResponse, ApiError> {
    let command = SourceCommand::Update {
        name: body.name.clone(),
        location: body.location.clone(),
        settings: body.settings.clone(),
    };
    Ok(HttpResponse::Ok().json(send(&bus, &caller, *id, &*body, command).await?))
}

#[utoipa::path(delete, path = "/v1/sources/{id}", tag = "sources",
    params(("id" = Uuid, Path), ("Idempotency-Key" = Option<String>, Header, description = "Retry-safe key, unique per user", min_length = 1, max_length = 255, pattern = "^[!-~]+$")),
    responses((status = 200, body = CommandOutcome), CommandProblems), security(("bearer" = [])))]
#[delete("/sources/{id}")]
pub async fn remove(
    bus: web::Data<CommandBus>,
    caller: Caller,
    id: web::Path<Uuid>,
) -> Result<HttpResponse, ApiError> {
    Ok(HttpResponse::Ok().json(send(&bus, &caller, *id, &(), SourceCommand::Remove).await?))
}

/// Ask for the source to be synced (a sync worker picks the request up).
#[utoipa::path(post, path = "/v1/sources/{id}/sync", tag = "sources",
    params(("id" = Uuid, Path), ("Idempotency-Key" = Option<String>, Header, description = "Retry-safe key, unique per user", min_length = 1, max_length = 255, pattern = "^[!-~]+$")),
    responses((status = 200, body = CommandOutcome), CommandProblems), security(("bearer" = [])))]
#[post("/sources/{id}/sync")]
pub async fn request_sync(
    bus: web::Data<CommandBus>,
    caller: Caller,
    id: web::Path<Uuid>,
) -> Result<HttpResponse, ApiError> {
    let command = SourceCommand::RequestSync {
        requested_by: caller.claims.sub.to_string(),
    };
    Ok(HttpResponse::Ok().json(send(&bus, &caller, *id, &(), command).await?))
}

/// A sync worker reports that it started the requested sync.
#[utoipa::path(post, path = "/v1/sources/{id}/sync/start", tag = "sources", request_body = StartSyncRequest,
    params(("id" = Uuid, Path), ("Idempotency-Key" = Option<String>, Header, description = "Retry-safe key, unique per user", min_length = 1, max_length = 255, pattern = "^[!-~]+$")),
    responses((status = 200, body = CommandOutcome), CommandProblems), security(("bearer" = [])))]
#[post("/sources/{id}/sync/start")]
pub async fn start_sync(
    bus: web::Data<CommandBus>,
    caller: Caller,
    id: web::Path<Uuid>,
    body: web::Json<StartSyncRequest>,
) -> Result<HttpResponse, ApiError> {
    let command = SourceCommand::StartSync {
        sync_id: body.sync_id,
    };
    Ok(HttpResponse::Ok().json(send(&bus, &caller, *id, &*body, command).await?))
}

/// A sync worker reports a finished sync and the number of documents ingested.
#[utoipa::path(post, path = "/v1/sources/{id}/sync/complete", tag = "sources", request_body = CompleteSyncRequest,
    params(("id" = Uuid, Path), ("Idempotency-Key" = Option<String>, Header, description = "Retry-safe key, unique per user", min_length = 1, max_length = 255, pattern = "^[!-~]+$")),
    responses((status = 200, body = CommandOutcome), CommandProblems), security(("bearer" = [])))]
#[post("/sources/{id}/sync/complete")]
pub async fn complete_sync(
    bus: web::Data<CommandBus>,
    caller: Caller,
    id: web::Path<Uuid>,
    body: web::Json<CompleteSyncRequest>,
) -> Result<HttpResponse, ApiError> {
    let command = SourceCommand::CompleteSync {
        sync_id: body.sync_id,
        document_count: body.document_count,
    };
    Ok(HttpResponse::Ok().json(send(&bus, &caller, *id, &*body, command).await?))
}

/// A sync worker reports a failed sync.
#[utoipa::path(post, path = "/v1/sources/{id}/sync/fail", tag = "sources", request_body = FailSyncRequest,
    params(("id" = Uuid, Path), ("Idempotency-Key" = Option<String>, Header, description = "Retry-safe key, unique per user", min_length = 1, max_length = 255, pattern = "^[!-~]+$")),
    responses((status = 200, body = CommandOutcome), CommandProblems), security(("bearer" = [])))]
#[post("/sources/{id}/sync/fail")]
pub async fn fail_sync(
    bus: web::Data<CommandBus>,
    caller: Caller,
    id: web::Path<Uuid>,
    body: web::Json<FailSyncRequest>,
) -> Result<HttpResponse, ApiError> {
    let command = SourceCommand::FailSync {
        sync_id: body.sync_id,
        error: body.error.clone(),
    };
    Ok(HttpResponse::Ok().json(send(&bus, &caller, *id, &*body, command).await?))
}

/// The tenant's knowledge sources from the read model: state, document count, last error and
/// sync history (any role). Eventually consistent; `GET /v1/sources/{id}` reads one source
/// straight from its events.
#[utoipa::path(get, path = "/v1/sources", tag = "sources",
    responses((status = 200, body = Vec<projections::sources::SourceSummary>), CommandProblems), security(("bearer" = [])))]
#[get("/sources")]
pub async fn list(
    tenants: web::Data<crate::read_pool::ReadPool>,
    auth: Authenticated,
) -> Result<HttpResponse, ApiError> {
    let mut tx = super::tenant_tx(&tenants, &auth.0.tenant_id).await?;
    let sources = projections::sources::list(&mut tx, &auth.0.tenant_id)
        .await
        .map_err(crate::routes::conversations::read_error)?;
    super::end_read(tx);
    Ok(HttpResponse::Ok().json(sources))
}
