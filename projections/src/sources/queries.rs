//! What the API reads from the sources read model.
use domain::TenantId;
use sqlx::PgConnection;

use domain::knowledge_source::SourceKind;

use super::storage::Stored;
use super::{SourceState, SourceSummary, SyncPhase};
use crate::projection::ReadError;

/// The tenant's sources, oldest first.
pub async fn list(
    conn: &mut PgConnection,
    tenant: &TenantId,
) -> Result<Vec<SourceSummary>, ReadError> {
    let rows = sqlx::query_as!(
        Stored,
        r#"SELECT source_id, kind AS "kind: SourceKind", name, location,
             status AS "status: SourceState", sync_state AS "sync_state: SyncPhase",
             document_count, last_error, last_synced_at, added_at, updated_at, version, history
           FROM rm_sources WHERE tenant_id = $1 ORDER BY added_at, source_id"#,
        tenant.as_str(),
    )
    .fetch_all(&mut *conn)
    .await?;
    rows.into_iter().map(Stored::decode).collect()
}
