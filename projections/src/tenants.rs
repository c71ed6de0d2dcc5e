//! The tenant read model: the tenant aggregate's state (settings, feature flags, members and
//! roles), folded by the aggregate's own `apply` so it can never disagree with the command side.
use async_trait::async_trait;
use cqrs_es::Aggregate;
use domain::tenant::{Tenant, TenantEvent};
use sqlx::{PgConnection, PgPool, Row};
use streaming::Envelope;

use crate::runtime::{decode, stored, stored_for_apply, ApplyError, Projection, ReadError};

pub const TABLE: &str = "rm_tenants";

pub struct TenantsProjection;

#[async_trait]
impl Projection for TenantsProjection {
    fn name(&self) -> &'static str {
        "tenants"
    }

    fn aggregate_types(&self) -> &'static [&'static str] {
        &["tenant"]
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
        let payload: TenantEvent = decode(event)?;
        let row = sqlx::query(&format!(
            "SELECT version, state FROM {table} WHERE tenant_id = $1 FOR UPDATE"
        ))
        .bind(&event.aggregate_id)
        .fetch_optional(&mut *conn)
        .await?;
        let mut state = match row {
            Some(r) if event.sequence <= r.get::<i64, _>("version") => return Ok(false),
            Some(r) => stored_for_apply::<Tenant>("tenant state", r.get("state"))?,
            None => Tenant::default(),
        };
        state.apply(payload);
        let state = serde_json::to_value(&state)
            .map_err(|e| ApplyError::Poison(format!("cannot store the row: {e}")))?;
        sqlx::query(&format!(
            "INSERT INTO {table} (tenant_id, version, state, updated_at) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (tenant_id) DO UPDATE SET version = $2, state = $3, updated_at = $4"
        ))
        .bind(&event.aggregate_id)
        .bind(event.sequence)
        .bind(state)
        .bind(event.recorded_at)
        .execute(&mut *conn)
        .await?;
        Ok(true)
    }
}

/// The tenant's state and version, if its events have reached the read model.
pub async fn get(pool: &PgPool, tenant: &str) -> Result<Option<(Tenant, u64)>, ReadError> {
    let row = sqlx::query(&format!(
        "SELECT version, state FROM {TABLE} WHERE tenant_id = $1"
    ))
    .bind(tenant)
    .fetch_optional(pool)
    .await?;
    row.map(|r| {
        let state = stored("tenant state", r.get("state"))?;
        Ok((state, r.get::<i64, _>("version") as u64))
    })
    .transpose()
}
