//! What the API reads from the sources read model.
use domain::TenantId;
use sqlx::PgPool;

use super::storage::{Stored, COLUMNS};
use super::SourceSummary;
use crate::projection::ReadError;

/// The tenant's sources, oldest first.
pub async fn list(pool: &PgPool, tenant: &TenantId) -> Result<Vec<SourceSummary>, ReadError> {
    let rows: Vec<Stored> = sqlx::query_as(&format!(
        "SELECT {COLUMNS} FROM rm_sources WHERE tenant_id = $1 ORDER BY added_at, source_id"
    ))
    .bind(tenant)
    .fetch_all(pool)
    .await?;
    rows.into_iter().map(Stored::decode).collect()
}
