//! Inbound webhooks (docs/webhooks.md): a tenant's connectors report source syncs by webhook,
//! signed the Standard Webhooks way with the tenant's inbound secret. Every delivery is
//! verified (signature, timestamp within ±5 minutes) and a `webhook-id` is accepted once
//! (remembered in Redis for longer than the timestamp window).
use std::time::Duration;

use actix_web::{post, web, HttpRequest, HttpResponse};
use commands::{CommandBus, CommandContext};
use domain::knowledge_source::SourceCommand;
use domain::{Code, Role, TenantId, UserId};
use event_store::TenantPool;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

use crate::auth::unavailable;
use crate::problem::ApiError;
use crate::rate_limit::RateLimiter;
use crate::routes::{Caller, CommandProblems};
use crate::webhooks::{new_secret, verify, VerifyError, WebhookSettings};

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(rotate_inbound_secret).service(source_sync);
}

#[derive(Debug, Serialize, ToSchema)]
pub struct InboundSecret {
    /// Connectors sign inbound webhooks with it (`whsec_...`). Shown this once; the previous
    /// one stays valid for `webhooks.rotation_overlap_secs`.
    pub secret: String,
}

/// Creates (or rotates) the tenant's inbound webhook secret (Admin).
#[utoipa::path(post, path = "/v1/tenant/inbound-secret", tag = "tenant",
    responses((status = 200, body = InboundSecret), CommandProblems), security(("bearer" = [])))]
#[post("/tenant/inbound-secret")]
pub async fn rotate_inbound_secret(
    tenants: web::Data<TenantPool>,
    settings: web::Data<WebhookSettings>,
    caller: Caller,
) -> Result<HttpResponse, ApiError> {
    caller.claims.require_admin("the inbound secret")?;
    let secret = new_secret();
    let mut tx = tenants
        .begin(&caller.claims.tenant_id)
        .await
        .map_err(unavailable)?;
    sqlx::query!(
        "INSERT INTO inbound_secrets (tenant_id, secret) VALUES ($1, $2)
         ON CONFLICT (tenant_id) DO UPDATE SET previous_secret = inbound_secrets.secret,
           secret = EXCLUDED.secret, previous_until = now() + make_interval(secs => $3)",
        caller.claims.tenant_id.as_str(),
        secret,
        settings.rotation_overlap_secs as f64,
    )
    .execute(&mut *tx)
    .await
    .map_err(unavailable)?;
    tx.commit().await.map_err(unavailable)?;
    Ok(HttpResponse::Ok()
        .insert_header((actix_web::http::header::CACHE_CONTROL, "no-store"))
        .json(InboundSecret { secret }))
}

/// What a connector reports about a sync.
#[derive(Debug, Deserialize, Serialize, ToSchema)]
#[serde(tag = "type", deny_unknown_fields)]
pub enum InboundSyncEvent {
    /// The sync began.
    #[serde(rename = "sync.started")]
    Started { sync_id: Uuid },
    /// The sync finished.
    #[serde(rename = "sync.completed")]
    Completed { sync_id: Uuid, document_count: u64 },
    /// The sync failed.
    #[serde(rename = "sync.failed")]
    Failed {
        sync_id: Uuid,
        #[schema(min_length = 1, max_length = 2000)]
        error: String,
    },
}

/// A connector's report on a source sync, as a signed webhook (no bearer token: the signature
/// with the tenant's inbound secret is the credential).
#[utoipa::path(post, path = "/v1/inbound/{tenant}/sources/{source_id}/sync", tag = "sources",
    request_body = InboundSyncEvent,
    params(("tenant" = String, Path, pattern = "^[a-z0-9_-]{1,64}$"), ("source_id" = Uuid, Path),
           ("webhook-id" = String, Header), ("webhook-timestamp" = String, Header),
           ("webhook-signature" = String, Header)),
    responses((status = 200, body = commands::CommandOutcome), CommandProblems))]
#[post("/inbound/{tenant}/sources/{source_id}/sync")]
pub async fn source_sync(
    req: HttpRequest,
    bus: web::Data<CommandBus>,
    tenants: web::Data<TenantPool>,
    limiter: web::Data<RateLimiter>,
    path: web::Path<(String, Uuid)>,
    body: web::Bytes,
) -> Result<HttpResponse, ApiError> {
    let (tenant, source_id) = path.into_inner();
    let refused = |why: String| ApiError::new(Code::WebhookSignatureInvalid, why);
    let tenant_id =
        TenantId::parse(&tenant).map_err(|e| ApiError::new(Code::InvalidPath, e.to_string()))?;
    // The path names the tenant whose secret must have signed the body: its rows only.
    let mut tx = tenants.begin(&tenant_id).await.map_err(unavailable)?;
    let secrets = sqlx::query!(
        "SELECT secret, previous_secret, COALESCE(previous_until > now(), false) AS \"previous_valid!\"
         FROM inbound_secrets WHERE tenant_id = $1",
        tenant_id.as_str(),
    )
    .fetch_optional(&mut *tx)
    .await
    .map_err(unavailable)?;
    tx.commit().await.map_err(unavailable)?;
    let secrets = secrets.ok_or_else(|| refused("this tenant has no inbound secret".into()))?;
    let mut valid = vec![secrets.secret.as_str()];
    if let (Some(previous), true) = (&secrets.previous_secret, secrets.previous_valid) {
        valid.push(previous.as_str());
    }
    let header = |n: &str| req.headers().get(n).and_then(|v| v.to_str().ok());
    let text = std::str::from_utf8(&body).map_err(|_| refused("the body is not UTF-8".into()))?;
    verify(
        &valid,
        header("webhook-id"),
        header("webhook-timestamp"),
        header("webhook-signature"),
        text,
        chrono::Utc::now().timestamp(),
    )
    .map_err(|e: VerifyError| refused(e.to_string()))?;
    let id = header("webhook-id").unwrap_or_default();
    // Longer than the timestamp window: a replay outside it fails on the timestamp.
    let window = Duration::from_secs(2 * crate::webhooks::TOLERANCE_SECS as u64 + 60);
    match limiter
        .first_time(&format!("inbound:{tenant_id}:{id}"), window)
        .await
    {
        Some(true) => {}
        Some(false) => {
            return Err(ApiError::new(
                Code::WebhookReplayed,
                "this webhook-id was already received",
            ))
        }
        None => {
            return Err(ApiError::new(
                Code::ServiceUnavailable,
                "replays cannot be checked right now (Redis); send it again later",
            ))
        }
    }
    let event: InboundSyncEvent = serde_json::from_str(text)
        .map_err(|e| ApiError::new(Code::InvalidBody, format!("not a sync event: {e}")))?;
    let command = match event {
        InboundSyncEvent::Started { sync_id } => SourceCommand::StartSync { sync_id },
        InboundSyncEvent::Completed {
            sync_id,
            document_count,
        } => SourceCommand::CompleteSync {
            sync_id,
            document_count,
        },
        InboundSyncEvent::Failed { sync_id, error } => SourceCommand::FailSync { sync_id, error },
    };
    let connector = UserId::parse("connector")
        .map_err(|e| ApiError::new(Code::InternalError, e.to_string()))?;
    let ctx = CommandContext {
        // The webhook's id correlates the events with the connector's delivery.
        correlation_id: id.to_string(),
        causation_id: Some(id.to_string()),
        ..CommandContext::acting(tenant_id, connector, Role::Operator)
    };
    Ok(HttpResponse::Ok().json(bus.source(&ctx, source_id, command).await?))
}
