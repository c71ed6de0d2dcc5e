//! A tenant's webhook endpoints and their delivery log (Admin; docs/webhooks.md).
use actix_web::{delete, get, post, web, HttpResponse};
use commands::{CommandBus, CommandOutcome};
use domain::access::WebhookTopic;
use domain::tenant::TenantCommand;
use domain::Code;
use event_store::TenantPool;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

use crate::auth::unavailable;
use crate::problem::ApiError;
use crate::routes::{Caller, CommandProblems};
use crate::webhooks::{new_secret, refuse_url, WebhookSettings};

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(add)
        .service(list)
        .service(remove)
        .service(rotate_secret)
        .service(enable)
        .service(deliveries)
        .service(redeliver);
}

fn admin(caller: &Caller) -> Result<(), ApiError> {
    caller.claims.require_admin("webhooks")
}

fn topic(word: &str) -> Result<WebhookTopic, ApiError> {
    word.parse().map_err(|e: domain::text_enum::UnknownWord| {
        ApiError::new(Code::InvalidSettings, e.to_string())
    })
}

#[derive(Debug, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AddWebhookRequest {
    /// The endpoint (https).
    #[schema(max_length = 2000, example = "https://hooks.example.com/answers")]
    pub url: String,
    /// `answer.downvoted`, `question.blocked`, `source.sync_failed`, `conversation.escalated`,
    /// `member.changed`.
    #[schema(min_items = 1, max_items = 5, example = json!(["answer.downvoted"]))]
    pub topics: Vec<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct WebhookSecret {
    pub endpoint_id: String,
    /// The signing secret (`whsec_...`): verify `webhook-signature` with it. Shown this once.
    pub secret: String,
}

#[derive(Debug, Serialize, ToSchema, sqlx::FromRow)]
pub struct WebhookView {
    pub endpoint_id: String,
    pub url: String,
    pub topics: Vec<String>,
    pub enabled: bool,
    /// Failed attempts in a row (reset by a success).
    pub failure_streak: i32,
    pub created_at: chrono::DateTime<chrono::Utc>,
}

/// Subscribes an endpoint to topics. Its secret is in the answer, once.
#[utoipa::path(post, path = "/v1/tenant/webhooks", tag = "tenant", request_body = AddWebhookRequest,
    responses((status = 201, body = WebhookSecret), CommandProblems), security(("bearer" = [])))]
#[post("/tenant/webhooks")]
pub async fn add(
    bus: web::Data<CommandBus>,
    tenants: web::Data<TenantPool>,
    settings: web::Data<WebhookSettings>,
    caller: Caller,
    body: web::Json<AddWebhookRequest>,
) -> Result<HttpResponse, ApiError> {
    admin(&caller)?;
    if let Some(why) = refuse_url(&body.url, &settings) {
        return Err(ApiError::new(Code::InvalidWebhookUrl, why));
    }
    let topics = body
        .topics
        .iter()
        .map(|t| topic(t))
        .collect::<Result<Vec<_>, _>>()?;
    let tenant = caller.claims.tenant_id.as_str();
    let endpoint_id = Uuid::now_v7().simple().to_string();
    let secret = new_secret();
    let words: Vec<String> = topics.iter().map(|t| t.to_string()).collect();
    // The row first: an event never names an endpoint that cannot be delivered to.
    let mut tx = tenants
        .begin(&caller.claims.tenant_id)
        .await
        .map_err(unavailable)?;
    sqlx::query!(
        "INSERT INTO webhook_endpoints (tenant_id, endpoint_id, url, topics, secret)
         VALUES ($1, $2, $3, $4, $5)",
        tenant,
        endpoint_id,
        body.url.trim(),
        &words,
        secret,
    )
    .execute(&mut *tx)
    .await
    .map_err(unavailable)?;
    tx.commit().await.map_err(unavailable)?;
    let command = TenantCommand::AddWebhook {
        endpoint_id: endpoint_id.clone(),
        url: body.url.clone(),
        topics,
    };
    if let Err(e) = bus.tenant(&caller.context(&*body), command).await {
        let Ok(mut tx) = tenants.begin(&caller.claims.tenant_id).await else {
            return Err(e.into());
        };
        let _ = sqlx::query!(
            "DELETE FROM webhook_endpoints WHERE tenant_id = $1 AND endpoint_id = $2",
            tenant,
            endpoint_id
        )
        .execute(&mut *tx)
        .await;
        let _ = tx.commit().await;
        return Err(e.into());
    }
    Ok(HttpResponse::Created()
        .insert_header((actix_web::http::header::CACHE_CONTROL, "no-store"))
        .json(WebhookSecret {
            endpoint_id,
            secret,
        }))
}

/// The tenant's endpoints (never their secrets).
#[utoipa::path(get, path = "/v1/tenant/webhooks", tag = "tenant",
    responses((status = 200, body = Vec<WebhookView>), CommandProblems), security(("bearer" = [])))]
#[get("/tenant/webhooks")]
pub async fn list(
    tenants: web::Data<TenantPool>,
    caller: Caller,
) -> Result<HttpResponse, ApiError> {
    admin(&caller)?;
    let mut tx = tenants
        .begin(&caller.claims.tenant_id)
        .await
        .map_err(unavailable)?;
    let rows = sqlx::query_as!(
        WebhookView,
        "SELECT endpoint_id, url, topics, enabled, failure_streak, created_at
         FROM webhook_endpoints WHERE tenant_id = $1 ORDER BY created_at",
        caller.claims.tenant_id.as_str(),
    )
    .fetch_all(&mut *tx)
    .await
    .map_err(unavailable)?;
    tx.commit().await.map_err(unavailable)?;
    Ok(HttpResponse::Ok().json(rows))
}

/// Unsubscribes an endpoint (its pending deliveries are dropped).
#[utoipa::path(delete, path = "/v1/tenant/webhooks/{endpoint_id}", tag = "tenant",
    params(("endpoint_id" = String, Path)),
    responses((status = 200, body = CommandOutcome), CommandProblems), security(("bearer" = [])))]
#[delete("/tenant/webhooks/{endpoint_id}")]
pub async fn remove(
    bus: web::Data<CommandBus>,
    tenants: web::Data<TenantPool>,
    caller: Caller,
    endpoint_id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    admin(&caller)?;
    let command = TenantCommand::RemoveWebhook {
        endpoint_id: endpoint_id.clone(),
    };
    let outcome = bus.tenant(&caller.context(&()), command).await?;
    let mut tx = tenants
        .begin(&caller.claims.tenant_id)
        .await
        .map_err(unavailable)?;
    sqlx::query!(
        "DELETE FROM webhook_endpoints WHERE tenant_id = $1 AND endpoint_id = $2",
        caller.claims.tenant_id.as_str(),
        endpoint_id.as_str(),
    )
    .execute(&mut *tx)
    .await
    .map_err(unavailable)?;
    tx.commit().await.map_err(unavailable)?;
    Ok(HttpResponse::Ok().json(outcome))
}

/// A new signing secret; deliveries carry signatures by both secrets during the overlap
/// (`webhooks.rotation_overlap_secs`), so receivers switch without losing a message.
#[utoipa::path(post, path = "/v1/tenant/webhooks/{endpoint_id}/rotate-secret", tag = "tenant",
    params(("endpoint_id" = String, Path)),
    responses((status = 200, body = WebhookSecret), CommandProblems), security(("bearer" = [])))]
#[post("/tenant/webhooks/{endpoint_id}/rotate-secret")]
pub async fn rotate_secret(
    tenants: web::Data<TenantPool>,
    settings: web::Data<WebhookSettings>,
    caller: Caller,
    endpoint_id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    admin(&caller)?;
    let secret = new_secret();
    let mut tx = tenants
        .begin(&caller.claims.tenant_id)
        .await
        .map_err(unavailable)?;
    let rotated = sqlx::query!(
        "UPDATE webhook_endpoints SET previous_secret = secret, secret = $3,
           previous_until = now() + make_interval(secs => $4)
         WHERE tenant_id = $1 AND endpoint_id = $2",
        caller.claims.tenant_id.as_str(),
        endpoint_id.as_str(),
        secret,
        settings.rotation_overlap_secs as f64,
    )
    .execute(&mut *tx)
    .await
    .map_err(unavailable)?
    .rows_affected();
    tx.commit().await.map_err(unavailable)?;
    if rotated == 0 {
        return Err(ApiError::new(
            Code::WebhookNotFound,
            "no such webhook endpoint",
        ));
    }
    Ok(HttpResponse::Ok()
        .insert_header((actix_web::http::header::CACHE_CONTROL, "no-store"))
        .json(WebhookSecret {
            endpoint_id: endpoint_id.into_inner(),
            secret,
        }))
}

/// Delivers to a disabled endpoint again (its failure streak starts over).
#[utoipa::path(post, path = "/v1/tenant/webhooks/{endpoint_id}/enable", tag = "tenant",
    params(("endpoint_id" = String, Path)),
    responses((status = 200, body = CommandOutcome), CommandProblems), security(("bearer" = [])))]
#[post("/tenant/webhooks/{endpoint_id}/enable")]
pub async fn enable(
    bus: web::Data<CommandBus>,
    tenants: web::Data<TenantPool>,
    caller: Caller,
    endpoint_id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    admin(&caller)?;
    let command = TenantCommand::EnableWebhook {
        endpoint_id: endpoint_id.clone(),
    };
    let outcome = bus.tenant(&caller.context(&()), command).await?;
    let mut tx = tenants
        .begin(&caller.claims.tenant_id)
        .await
        .map_err(unavailable)?;
    sqlx::query!(
        "UPDATE webhook_endpoints SET enabled = true, failure_streak = 0
         WHERE tenant_id = $1 AND endpoint_id = $2",
        caller.claims.tenant_id.as_str(),
        endpoint_id.as_str(),
    )
    .execute(&mut *tx)
    .await
    .map_err(unavailable)?;
    tx.commit().await.map_err(unavailable)?;
    Ok(HttpResponse::Ok().json(outcome))
}

#[derive(Debug, Serialize, ToSchema, sqlx::FromRow)]
pub struct DeliveryView {
    /// Also the `webhook-id` header (`msg_` and this id without dashes).
    pub delivery_id: Uuid,
    pub event_id: Uuid,
    pub topic: String,
    /// `pending`, `delivered` or `failed` (given up).
    pub status: String,
    pub attempts: i32,
    pub last_status: Option<i32>,
    pub last_error: Option<String>,
    pub next_attempt_at: chrono::DateTime<chrono::Utc>,
    pub created_at: chrono::DateTime<chrono::Utc>,
    pub delivered_at: Option<chrono::DateTime<chrono::Utc>>,
}

/// The endpoint's deliveries, newest first (the last 100).
#[utoipa::path(get, path = "/v1/tenant/webhooks/{endpoint_id}/deliveries", tag = "tenant",
    params(("endpoint_id" = String, Path)),
    responses((status = 200, body = Vec<DeliveryView>), CommandProblems), security(("bearer" = [])))]
#[get("/tenant/webhooks/{endpoint_id}/deliveries")]
pub async fn deliveries(
    tenants: web::Data<TenantPool>,
    caller: Caller,
    endpoint_id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    admin(&caller)?;
    let mut tx = tenants
        .begin(&caller.claims.tenant_id)
        .await
        .map_err(unavailable)?;
    let rows = sqlx::query_as!(
        DeliveryView,
        "SELECT delivery_id, event_id, topic, status, attempts, last_status, last_error,
           next_attempt_at, created_at, delivered_at
         FROM webhook_deliveries WHERE tenant_id = $1 AND endpoint_id = $2
         ORDER BY created_at DESC LIMIT 100",
        caller.claims.tenant_id.as_str(),
        endpoint_id.as_str(),
    )
    .fetch_all(&mut *tx)
    .await
    .map_err(unavailable)?;
    tx.commit().await.map_err(unavailable)?;
    Ok(HttpResponse::Ok().json(rows))
}

/// Sends a delivery again now (same `webhook-id`: the receiver can tell it is a repeat).
#[utoipa::path(post, path = "/v1/tenant/webhooks/{endpoint_id}/deliveries/{delivery_id}/redeliver", tag = "tenant",
    params(("endpoint_id" = String, Path), ("delivery_id" = Uuid, Path)),
    responses((status = 202, description = "Queued"), CommandProblems), security(("bearer" = [])))]
#[post("/tenant/webhooks/{endpoint_id}/deliveries/{delivery_id}/redeliver")]
pub async fn redeliver(
    tenants: web::Data<TenantPool>,
    caller: Caller,
    path: web::Path<(String, Uuid)>,
) -> Result<HttpResponse, ApiError> {
    admin(&caller)?;
    let (endpoint_id, delivery_id) = path.into_inner();
    let mut tx = tenants
        .begin(&caller.claims.tenant_id)
        .await
        .map_err(unavailable)?;
    let queued = sqlx::query!(
        "UPDATE webhook_deliveries SET status = 'pending', next_attempt_at = now()
         WHERE tenant_id = $1 AND endpoint_id = $2 AND delivery_id = $3",
        caller.claims.tenant_id.as_str(),
        endpoint_id,
        delivery_id,
    )
    .execute(&mut *tx)
    .await
    .map_err(unavailable)?
    .rows_affected();
    tx.commit().await.map_err(unavailable)?;
    if queued == 0 {
        return Err(ApiError::new(
            Code::DeliveryNotFound,
            "no such delivery for this endpoint",
        ));
    }
    Ok(HttpResponse::Accepted().finish())
}
