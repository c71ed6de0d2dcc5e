//! The knowledge sources read model: each source's current state and its sync history.
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use domain::knowledge_source::SourceEvent;
use serde::{Deserialize, Serialize};
use sqlx::{PgConnection, PgPool, Row};
use streaming::Envelope;
use utoipa::ToSchema;
use uuid::Uuid;

use crate::runtime::{
    decode, object_uuid, stored, stored_for_apply, ApplyError, Projection, ReadError,
};

pub const TABLE: &str = "rm_sources";

pub struct SourcesProjection;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct SyncRun {
    pub sync_id: Option<Uuid>,
    pub requested_at: DateTime<Utc>,
    pub requested_by: String,
    pub started_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
    /// `requested`, `running`, `completed` or `failed`.
    pub outcome: String,
    pub document_count: Option<u64>,
    pub error: Option<String>,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct SourceSummary {
    pub id: Uuid,
    pub kind: String,
    pub name: String,
    pub location: String,
    /// `active` or `removed`.
    pub status: String,
    /// `idle`, `requested` or `running`.
    pub sync_state: String,
    pub document_count: Option<i64>,
    pub last_error: Option<String>,
    pub last_synced_at: Option<DateTime<Utc>>,
    pub added_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub version: i64,
    /// Newest last.
    pub history: Vec<SyncRun>,
}

fn text<T: Serialize>(v: T) -> String {
    serde_json::to_value(v)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_default()
}

#[async_trait]
impl Projection for SourcesProjection {
    fn name(&self) -> &'static str {
        "sources"
    }

    fn aggregate_types(&self) -> &'static [&'static str] {
        &["knowledge_source"]
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
        let payload: SourceEvent = decode(event)?;
        let id = object_uuid(event)?;
        let at = event.recorded_at;
        if let SourceEvent::SourceAdded {
            kind,
            name,
            location,
            ..
        } = &payload
        {
            let inserted = sqlx::query(&format!(
                "INSERT INTO {table} (tenant_id, source_id, kind, name, location, status, sync_state, added_at, updated_at, version) \
                 VALUES ($1, $2, $3, $4, $5, 'active', 'idle', $6, $6, $7) ON CONFLICT DO NOTHING"
            ))
            .bind(&event.tenant_id)
            .bind(id)
            .bind(text(kind))
            .bind(name)
            .bind(location)
            .bind(at)
            .bind(event.sequence)
            .execute(&mut *conn)
            .await?;
            return Ok(inserted.rows_affected() == 1);
        }
        let row = sqlx::query(&format!(
            "SELECT version, history FROM {table} WHERE tenant_id = $1 AND source_id = $2 FOR UPDATE"
        ))
        .bind(&event.tenant_id)
        .bind(id)
        .fetch_optional(&mut *conn)
        .await?
        .ok_or_else(|| ApplyError::Poison(format!("{} for a source never added", event.event_type)))?;
        if event.sequence <= row.get::<i64, _>("version") {
            return Ok(false);
        }
        let mut history: Vec<SyncRun> = stored_for_apply("sync history", row.get("history"))?;
        // Columns to set: (sql fragment, values) kept simple by one UPDATE per event kind.
        let (sets, values): (&str, Vec<Option<String>>) = match payload {
            SourceEvent::SourceAdded { .. } => unreachable!("handled above"),
            SourceEvent::SourceUpdated { name, location, .. } => (
                "name = coalesce($5, name), location = coalesce($6, location)",
                vec![name, location],
            ),
            SourceEvent::SourceRemoved {} => ("status = 'removed', sync_state = 'idle'", vec![]),
            SourceEvent::SyncRequested { requested_by } => {
                history.push(SyncRun {
                    sync_id: None,
                    requested_at: at,
                    requested_by,
                    started_at: None,
                    finished_at: None,
                    outcome: "requested".into(),
                    document_count: None,
                    error: None,
                });
                ("sync_state = 'requested'", vec![])
            }
            SourceEvent::SyncStarted { sync_id } => {
                if let Some(run) = history.last_mut() {
                    run.sync_id = Some(sync_id);
                    run.started_at = Some(at);
                    run.outcome = "running".into();
                }
                ("sync_state = 'running'", vec![])
            }
            SourceEvent::SyncCompleted { document_count, .. } => {
                if let Some(run) = history.last_mut() {
                    run.finished_at = Some(at);
                    run.outcome = "completed".into();
                    run.document_count = Some(document_count);
                }
                (
                    "sync_state = 'idle', document_count = $5::bigint, last_synced_at = $3",
                    vec![Some(document_count.to_string())],
                )
            }
            SourceEvent::SyncFailed { error, .. } => {
                if let Some(run) = history.last_mut() {
                    run.finished_at = Some(at);
                    run.outcome = "failed".into();
                    run.error = Some(error.clone());
                }
                ("sync_state = 'idle', last_error = $5", vec![Some(error)])
            }
        };
        let history = serde_json::to_value(&history)
            .map_err(|e| ApplyError::Poison(format!("cannot store the row: {e}")))?;
        let sql = format!(
            "UPDATE {table} SET {sets}, updated_at = $3, version = $4, history = ${} \
             WHERE tenant_id = $1 AND source_id = $2 RETURNING version",
            5 + values.len()
        );
        let mut query = sqlx::query_scalar::<_, i64>(&sql)
            .bind(&event.tenant_id)
            .bind(id)
            .bind(at)
            .bind(event.sequence);
        for v in values {
            query = query.bind(v);
        }
        query.bind(history).fetch_one(&mut *conn).await?;
        Ok(true)
    }
}

pub async fn list(pool: &PgPool, tenant: &str) -> Result<Vec<SourceSummary>, ReadError> {
    let rows = sqlx::query(&format!(
        "SELECT source_id, kind, name, location, status, sync_state, document_count, last_error, last_synced_at, \
           added_at, updated_at, version, history FROM {TABLE} WHERE tenant_id = $1 ORDER BY added_at, source_id"
    ))
    .bind(tenant)
    .fetch_all(pool)
    .await?;
    rows.iter()
        .map(|r| {
            Ok(SourceSummary {
                id: r.get("source_id"),
                kind: r.get("kind"),
                name: r.get("name"),
                location: r.get("location"),
                status: r.get("status"),
                sync_state: r.get("sync_state"),
                document_count: r.get("document_count"),
                last_error: r.get("last_error"),
                last_synced_at: r.get("last_synced_at"),
                added_at: r.get("added_at"),
                updated_at: r.get("updated_at"),
                version: r.get("version"),
                history: stored("sync history", r.get("history"))?,
            })
        })
        .collect()
}
