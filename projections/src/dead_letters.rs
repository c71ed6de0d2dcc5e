//! Events a projection could not apply: kept as they were delivered, listed to the tenant's
//! admin, and applied again on request once their cause is gone.
use std::sync::Arc;

use chrono::{DateTime, Utc};
use domain::TenantId;
use serde::Serialize;
use sqlx::{PgConnection, PgPool};
use utoipa::ToSchema;

use crate::event::Projected;
use crate::projection::Projection;
use crate::runner::apply_one;
use crate::source::Delivery;
use crate::status::record_error;

/// An event a projection could not apply.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct DeadLetter {
    /// Its id.
    pub id: i64,
    /// The projection that refused it.
    pub projection: String,
    /// Where it came from (a topic, or `store`).
    pub topic: String,
    /// The partition it came from.
    pub partition: i32,
    /// Its offset (or store position).
    pub offset: i64,
    /// Why it could not be applied, with its causes.
    pub error: String,
    /// The event, when the envelope could be read.
    pub event_id: Option<uuid::Uuid>,
    /// The message as it was delivered.
    pub payload: String,
    /// When it was dead-lettered.
    pub created_at: DateTime<Utc>,
    /// When it was last retried.
    pub retried_at: Option<DateTime<Utc>>,
    /// When a retry applied it.
    pub resolved_at: Option<DateTime<Utc>>,
}

/// Records a dead letter and the projection's error. `event` is the decoded event when the
/// envelope could be read (it carries the tenant, so the tenant's admin sees the letter).
pub async fn record(
    pool: &PgPool,
    projection: &str,
    delivery: &Delivery,
    event: Option<&Projected>,
    error: &str,
) -> Result<(), sqlx::Error> {
    tracing::warn!(projection, %error, "dead-lettering an event");
    let payload = String::from_utf8_lossy(&delivery.payload).to_string();
    sqlx::query!(
        "INSERT INTO dead_letters (projection, topic, kafka_partition, kafka_offset, message_key,
           payload, error, event_id, tenant_id) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
        projection,
        delivery.origin.channel,
        delivery.origin.partition,
        delivery.origin.offset,
        delivery.key,
        payload,
        error,
        event.map(|e| e.meta.event_id),
        event.map(|e| e.meta.tenant.as_str()),
    )
    .execute(pool)
    .await?;
    record_error(pool, projection, error).await
}

/// The tenant's dead letters, newest first (undecodable letters have no tenant and are shown
/// to no tenant).
pub async fn list(
    conn: &mut PgConnection,
    tenant: &TenantId,
    include_resolved: bool,
) -> Result<Vec<DeadLetter>, sqlx::Error> {
    sqlx::query_as!(
        DeadLetter,
        r#"SELECT id, projection, topic, kafka_partition AS partition, kafka_offset AS "offset",
             error, event_id, payload, created_at, retried_at, resolved_at
           FROM dead_letters
           WHERE tenant_id = $1 AND ($2 OR resolved_at IS NULL) ORDER BY id DESC LIMIT 500"#,
        tenant.as_str(),
        include_resolved,
    )
    .fetch_all(&mut *conn)
    .await
}

/// Why a retry did not resolve a dead letter.
#[derive(Debug, thiserror::Error)]
pub enum RetryError {
    /// No open letter of the tenant has that id.
    #[error("no open dead letter with that id")]
    NotFound,
    /// Applying it failed again.
    #[error("still failing: {0}")]
    StillFailing(String),
    /// The database could not be reached.
    #[error("database")]
    Database(#[from] sqlx::Error),
}

#[derive(sqlx::FromRow)]
struct Letter {
    projection: String,
    payload: String,
}

/// Applies a dead letter again (after a fix); marks it resolved when that works.
pub async fn retry(
    pool: &PgPool,
    projections: &[Arc<dyn Projection>],
    tenant: &TenantId,
    id: i64,
) -> Result<DeadLetter, RetryError> {
    let letter = sqlx::query_as!(
        Letter,
        "SELECT projection, payload FROM dead_letters WHERE id = $1 AND tenant_id = $2 AND resolved_at IS NULL",
        id,
        tenant.as_str(),
    )
    .fetch_optional(pool)
    .await?
    .ok_or(RetryError::NotFound)?;
    let projection = projections
        .iter()
        .find(|p| p.name() == letter.projection)
        .ok_or(RetryError::NotFound)?;
    let outcome = match Projected::decode_bytes(letter.payload.as_bytes()) {
        Ok(event) => apply_one(pool, projection.as_ref(), &event)
            .await
            .map(|_| ())
            .map_err(|e| e.report()),
        Err(e) => Err(e.report()),
    };
    let resolved = outcome.is_ok();
    let letter = sqlx::query_as!(
        DeadLetter,
        r#"UPDATE dead_letters SET retried_at = now(), resolved_at = CASE WHEN $2 THEN now() END,
             error = COALESCE($3, error) WHERE id = $1
           RETURNING id, projection, topic, kafka_partition AS partition, kafka_offset AS "offset",
             error, event_id, payload, created_at, retried_at, resolved_at"#,
        id,
        resolved,
        outcome.as_ref().err().map(String::as_str),
    )
    .fetch_one(pool)
    .await?;
    match outcome {
        Ok(()) => Ok(letter),
        Err(e) => Err(RetryError::StillFailing(e)),
    }
}
