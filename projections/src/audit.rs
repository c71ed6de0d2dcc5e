//! The audit trail: every event as an entry — who (user, role), what (action), which object,
//! when, correlation, outcome — for compliance reviews (docs/audit.md).
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sqlx::{PgConnection, PgPool, Row};
use streaming::Envelope;
use utoipa::ToSchema;

use crate::runtime::{ApplyError, Projection};

pub const TABLE: &str = "rm_audit";

pub struct AuditProjection;

/// How the action ended, as far as the event says.
fn outcome(event_type: &str) -> &'static str {
    match event_type {
        "AnswerFailed" | "SyncFailed" => "failed",
        "QuestionBlocked" => "blocked",
        _ => "succeeded",
    }
}

#[async_trait]
impl Projection for AuditProjection {
    fn name(&self) -> &'static str {
        "audit"
    }

    fn aggregate_types(&self) -> &'static [&'static str] {
        &domain::AGGREGATE_TYPES
    }

    fn table(&self) -> &'static str {
        TABLE
    }

    async fn apply(
        &self,
        conn: &mut PgConnection,
        table: &str,
        event: &Envelope,
    ) -> Result<bool, ApplyError> {
        let object_id = event
            .aggregate_id
            .rsplit_once('/')
            .map_or(event.aggregate_id.as_str(), |(_, id)| id);
        // The payload's single key is the event type; keep what is inside it.
        let details = event
            .payload
            .as_object()
            .and_then(|o| o.values().next().cloned())
            .unwrap_or_else(|| event.payload.clone());
        let inserted = sqlx::query(&format!(
            "INSERT INTO {table} (event_id, tenant_id, position, recorded_at, actor_id, actor_role, action, \
               object_type, object_id, sequence, correlation_id, causation_id, outcome, details) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14) \
             ON CONFLICT (event_id) DO NOTHING"
        ))
        .bind(event.event_id)
        .bind(&event.tenant_id)
        .bind(event.position)
        .bind(event.recorded_at)
        .bind(&event.metadata.actor_id)
        .bind(&event.metadata.actor_role)
        .bind(&event.event_type)
        .bind(&event.aggregate_type)
        .bind(object_id)
        .bind(event.sequence)
        .bind(&event.metadata.correlation_id)
        .bind(&event.metadata.causation_id)
        .bind(outcome(&event.event_type))
        .bind(details)
        .execute(&mut *conn)
        .await?;
        Ok(inserted.rows_affected() == 1)
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct AuditEntry {
    pub event_id: uuid::Uuid,
    /// Global position: the cursor of the trail.
    pub position: i64,
    pub recorded_at: DateTime<Utc>,
    pub actor_id: String,
    pub actor_role: String,
    /// The event type, e.g. `MemberRoleChanged`.
    pub action: String,
    /// `tenant`, `conversation` or `knowledge_source`.
    pub object_type: String,
    pub object_id: String,
    /// The object's version after this action.
    pub sequence: i64,
    pub correlation_id: String,
    pub causation_id: Option<String>,
    /// `succeeded`, `failed` or `blocked`.
    pub outcome: String,
    #[schema(value_type = Object)]
    pub details: serde_json::Value,
}

/// Filters of the trail; all optional, combined with AND.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct AuditFilter {
    pub actor: Option<String>,
    pub action: Option<String>,
    pub object_type: Option<String>,
    pub object_id: Option<String>,
    pub from: Option<DateTime<Utc>>,
    pub to: Option<DateTime<Utc>>,
}

/// One page of the tenant's trail in position order, after `after_position`.
pub async fn page(
    pool: &PgPool,
    tenant: &str,
    filter: &AuditFilter,
    after_position: i64,
    limit: i64,
) -> Result<Vec<AuditEntry>, sqlx::Error> {
    let rows = sqlx::query(&format!(
        "SELECT event_id, position, recorded_at, actor_id, actor_role, action, object_type, object_id, \
           sequence, correlation_id, causation_id, outcome, details FROM {TABLE} \
         WHERE tenant_id = $1 AND position > $2 \
           AND ($3::text IS NULL OR actor_id = $3) AND ($4::text IS NULL OR action = $4) \
           AND ($5::text IS NULL OR object_type = $5) AND ($6::text IS NULL OR object_id = $6) \
           AND ($7::timestamptz IS NULL OR recorded_at >= $7) AND ($8::timestamptz IS NULL OR recorded_at < $8) \
         ORDER BY position LIMIT $9"
    ))
    .bind(tenant)
    .bind(after_position)
    .bind(&filter.actor)
    .bind(&filter.action)
    .bind(&filter.object_type)
    .bind(&filter.object_id)
    .bind(filter.from)
    .bind(filter.to)
    .bind(limit)
    .fetch_all(pool)
    .await?;
    Ok(rows
        .iter()
        .map(|r| AuditEntry {
            event_id: r.get("event_id"),
            position: r.get("position"),
            recorded_at: r.get("recorded_at"),
            actor_id: r.get("actor_id"),
            actor_role: r.get("actor_role"),
            action: r.get("action"),
            object_type: r.get("object_type"),
            object_id: r.get("object_id"),
            sequence: r.get("sequence"),
            correlation_id: r.get("correlation_id"),
            causation_id: r.get("causation_id"),
            outcome: r.get("outcome"),
            details: r.get("details"),
        })
        .collect())
}

pub const CSV_HEADER: &str =
    "position,recorded_at,actor_id,actor_role,action,object_type,object_id,sequence,correlation_id,outcome,event_id\n";

fn csv_field(value: &str) -> String {
    if value.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", value.replace('"', "\"\""))
    } else {
        value.to_string()
    }
}

impl AuditEntry {
    pub fn csv_line(&self) -> String {
        let fields = [
            self.position.to_string(),
            self.recorded_at.to_rfc3339(),
            self.actor_id.clone(),
            self.actor_role.clone(),
            self.action.clone(),
            self.object_type.clone(),
            self.object_id.clone(),
            self.sequence.to_string(),
            self.correlation_id.clone(),
            self.outcome.clone(),
            self.event_id.to_string(),
        ];
        let mut line = fields
            .iter()
            .map(|f| csv_field(f))
            .collect::<Vec<_>>()
            .join(",");
        line.push('\n');
        line
    }
}

/// Records that `actor` read the trail (route and query), before the read is answered.
pub async fn record_read(
    pool: &PgPool,
    tenant: &str,
    actor: &str,
    role: &str,
    route: &str,
    query: &str,
) -> Result<(), sqlx::Error> {
    sqlx::query("INSERT INTO audit_reads (tenant_id, actor_id, actor_role, route, query) VALUES ($1, $2, $3, $4, $5)")
        .bind(tenant)
        .bind(actor)
        .bind(role)
        .bind(route)
        .bind(query)
        .execute(pool)
        .await?;
    Ok(())
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct AuditRead {
    pub id: i64,
    pub actor_id: String,
    pub actor_role: String,
    pub route: String,
    pub query: String,
    pub read_at: DateTime<Utc>,
}

pub async fn reads(pool: &PgPool, tenant: &str, limit: i64) -> Result<Vec<AuditRead>, sqlx::Error> {
    let rows = sqlx::query(
        "SELECT id, actor_id, actor_role, route, query, read_at FROM audit_reads WHERE tenant_id = $1 \
         ORDER BY id DESC LIMIT $2",
    )
    .bind(tenant)
    .bind(limit)
    .fetch_all(pool)
    .await?;
    Ok(rows
        .iter()
        .map(|r| AuditRead {
            id: r.get("id"),
            actor_id: r.get("actor_id"),
            actor_role: r.get("actor_role"),
            route: r.get("route"),
            query: r.get("query"),
            read_at: r.get("read_at"),
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_fields_are_quoted_only_when_needed() {
        assert_eq!(csv_field("plain"), "plain");
        assert_eq!(csv_field("a,b"), "\"a,b\"");
        assert_eq!(csv_field("say \"hi\""), "\"say \"\"hi\"\"\"");
        assert_eq!(csv_field("two\nlines"), "\"two\nlines\"");
    }
}
