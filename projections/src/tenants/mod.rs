//! The tenant read model: the tenant aggregate's state (settings, feature flags, members and
//! roles), folded by the aggregate's own `apply` so it can never disagree with the command side.
use async_trait::async_trait;
use cqrs_es::Aggregate;
use domain::tenant::{Tenant, TenantEvent};
use domain::{AggregateType, AnyEvent, TenantId};
use sqlx::PgConnection;

use crate::event::EventMeta;
use crate::projection::{stored, to_json, ApplyError, ReadError};
use crate::read_model::{ReadModel, Refusal};

/// The tenants read model.
pub struct Tenants;

/// A tenant's state and the version it has folded in.
#[derive(Debug, Clone, PartialEq)]
pub struct TenantRow {
    /// The tenant as its events say.
    pub state: Tenant,
    /// The tenant version folded in.
    pub version: i64,
    /// When its last event was recorded.
    pub updated_at: chrono::DateTime<chrono::Utc>,
}

#[async_trait]
impl ReadModel for Tenants {
    const NAME: &'static str = "tenants";
    const AGGREGATE_TYPES: &'static [AggregateType] = &[AggregateType::Tenant];
    const TABLES: &'static [&'static str] = &["rm_tenants"];
    type Event = TenantEvent;
    type State = TenantRow;
    type Key = TenantId;

    fn select(event: &AnyEvent) -> Option<&TenantEvent> {
        match event {
            AnyEvent::Tenant(e) => Some(e),
            _ => None,
        }
    }

    fn key(meta: &EventMeta) -> Result<TenantId, ApplyError> {
        if meta.aggregate_id != meta.tenant.as_str() {
            return Err(ApplyError::Poison(format!(
                "tenant event of `{}` filed under tenant `{}`",
                meta.aggregate_id, meta.tenant
            )));
        }
        Ok(meta.tenant.clone())
    }

    fn version(state: &TenantRow) -> i64 {
        state.version
    }

    fn fold(
        state: Option<TenantRow>,
        meta: &EventMeta,
        event: &TenantEvent,
    ) -> Result<TenantRow, Refusal> {
        let mut tenant = state.map(|s| s.state).unwrap_or_default();
        tenant.apply(event.clone());
        Ok(TenantRow {
            state: tenant,
            version: meta.sequence,
            updated_at: meta.recorded_at,
        })
    }

    async fn load(
        conn: &mut PgConnection,
        key: &TenantId,
    ) -> Result<Option<TenantRow>, ApplyError> {
        let row = sqlx::query_as!(
            Stored,
            "SELECT version, state, updated_at FROM rm_tenants WHERE tenant_id = $1 FOR UPDATE",
            key.as_str(),
        )
        .fetch_optional(&mut *conn)
        .await?;
        Ok(row.map(Stored::decode).transpose()?)
    }

    async fn save(
        conn: &mut PgConnection,
        key: &TenantId,
        row: &TenantRow,
    ) -> Result<(), ApplyError> {
        let state = to_json(&row.state)?;
        sqlx::query!(
            "INSERT INTO rm_tenants (tenant_id, version, state, updated_at) VALUES ($1, $2, $3, $4)
             ON CONFLICT (tenant_id) DO UPDATE SET version = $2, state = $3, updated_at = $4",
            key.as_str(),
            row.version,
            state,
            row.updated_at,
        )
        .execute(&mut *conn)
        .await?;
        Ok(())
    }
}

#[derive(sqlx::FromRow)]
struct Stored {
    version: i64,
    state: serde_json::Value,
    updated_at: chrono::DateTime<chrono::Utc>,
}

impl Stored {
    fn decode(self) -> Result<TenantRow, ReadError> {
        Ok(TenantRow {
            state: stored("tenant state", self.state)?,
            version: self.version,
            updated_at: self.updated_at,
        })
    }
}

/// The tenant's state and version, if its events have reached the read model.
pub async fn get(
    conn: &mut PgConnection,
    tenant: &TenantId,
) -> Result<Option<(Tenant, u64)>, ReadError> {
    let row = sqlx::query_as!(
        Stored,
        "SELECT version, state, updated_at FROM rm_tenants WHERE tenant_id = $1",
        tenant.as_str(),
    )
    .fetch_optional(&mut *conn)
    .await?;
    row.map(|r| {
        let row = r.decode()?;
        Ok((row.state, row.version as u64))
    })
    .transpose()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::testing::event;
    use crate::read_model::fold_all;

    #[test]
    fn the_tenant_folds_by_the_aggregates_own_apply() {
        let created = TenantEvent::TenantCreated {
            name: "Acme".into(),
            created_by: "alice".into(),
        };
        let renamed = TenantEvent::TenantRenamed {
            name: "Acme Corp".into(),
        };
        let row = fold_all::<Tenants>(&[
            event("acme", 1, 0, AnyEvent::Tenant(created.clone())),
            event("acme", 2, 1, AnyEvent::Tenant(renamed.clone())),
        ])
        .unwrap()
        .unwrap();
        let mut expected = Tenant::default();
        expected.apply(created);
        expected.apply(renamed);
        assert_eq!(row.state, expected);
        assert_eq!(row.version, 2);
    }
}
