//! Where the sources read model's rows live (`rm_sources`).
use domain::knowledge_source::SourceKind;
use domain::ScopedId;
use sqlx::PgConnection;

use super::{SourceState, SourceSummary, SyncPhase};
use crate::projection::{stored, to_json, ApplyError, ReadError};

/// A row as stored; `history` is JSON.
#[derive(sqlx::FromRow)]
pub(super) struct Stored {
    pub source_id: uuid::Uuid,
    pub kind: SourceKind,
    pub name: String,
    pub location: String,
    pub status: SourceState,
    pub sync_state: SyncPhase,
    pub document_count: Option<i64>,
    pub last_error: Option<String>,
    pub last_synced_at: Option<chrono::DateTime<chrono::Utc>>,
    pub added_at: chrono::DateTime<chrono::Utc>,
    pub updated_at: chrono::DateTime<chrono::Utc>,
    pub version: i64,
    pub history: serde_json::Value,
}

impl Stored {
    pub(super) fn decode(self) -> Result<SourceSummary, ReadError> {
        Ok(SourceSummary {
            id: self.source_id,
            kind: self.kind,
            name: self.name,
            location: self.location,
            status: self.status,
            sync_state: self.sync_state,
            document_count: self.document_count,
            last_error: self.last_error,
            last_synced_at: self.last_synced_at,
            added_at: self.added_at,
            updated_at: self.updated_at,
            version: self.version,
            history: stored("sync history", self.history)?,
        })
    }
}

/// Reads the part of the read model for `key`, locking it.
pub async fn load(
    conn: &mut PgConnection,
    key: &ScopedId,
) -> Result<Option<SourceSummary>, ReadError> {
    let row = sqlx::query_as!(
        Stored,
        r#"SELECT source_id, kind AS "kind: SourceKind", name, location,
             status AS "status: SourceState", sync_state AS "sync_state: SyncPhase",
             document_count, last_error, last_synced_at, added_at, updated_at, version, history
           FROM rm_sources WHERE tenant_id = $1 AND source_id = $2 FOR UPDATE"#,
        key.tenant.as_str(),
        key.id,
    )
    .fetch_optional(&mut *conn)
    .await?;
    row.map(Stored::decode).transpose()
}

/// Writes the part of the read model for `key`.
pub async fn save(
    conn: &mut PgConnection,
    key: &ScopedId,
    s: &SourceSummary,
) -> Result<(), ApplyError> {
    let history = to_json(&s.history)?;
    sqlx::query!(
        "INSERT INTO rm_sources (tenant_id, source_id, kind, name, location, status, sync_state,
           document_count, last_error, last_synced_at, added_at, updated_at, version, history)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)
         ON CONFLICT (tenant_id, source_id) DO UPDATE SET name = $4, location = $5, status = $6,
           sync_state = $7, document_count = $8, last_error = $9, last_synced_at = $10,
           updated_at = $12, version = $13, history = $14",
        key.tenant.as_str(),
        key.id,
        s.kind.as_str(),
        s.name,
        s.location,
        s.status.as_str(),
        s.sync_state.as_str(),
        s.document_count,
        s.last_error,
        s.last_synced_at,
        s.added_at,
        s.updated_at,
        s.version,
        history,
    )
    .execute(&mut *conn)
    .await?;
    Ok(())
}
