//! Our event store beside cqrs-es's own `postgres-es`, on the same Postgres and database, through
//! the same cqrs-es API (`PersistedEventStore::load_aggregate` + `commit`), with the same
//! aggregate, events, metadata and concurrency: appends per second and their latency. What ours
//! does on top — the tenant's transaction setting for row-level security, the global position,
//! the transaction id the commit-safe reader needs, the event id — is what the difference costs.
use std::sync::Arc;

use cqrs_es::persist::{PersistedEventRepository, PersistedEventStore};
use cqrs_es::EventStore;
use domain::knowledge_source::{KnowledgeSource, SourceEvent, SourceKind};
use event_store::{EventMetadata, PgEventRepository, TenantPool};
use sqlx::PgPool;

use crate::bench::{drive, Measurement};

/// postgres-es's tables (its documented schema), beside ours under other names.
const POSTGRES_ES_SCHEMA: [&str; 2] = [
    "CREATE TABLE pges_events (aggregate_type text NOT NULL, aggregate_id text NOT NULL, \
       sequence bigint CHECK (sequence >= 0) NOT NULL, event_type text NOT NULL, \
       event_version text NOT NULL, payload json NOT NULL, metadata json NOT NULL, \
       PRIMARY KEY (aggregate_type, aggregate_id, sequence))",
    "CREATE TABLE pges_snapshots (aggregate_type text NOT NULL, aggregate_id text NOT NULL, \
       last_sequence bigint CHECK (last_sequence >= 0) NOT NULL, \
       current_snapshot bigint CHECK (current_snapshot >= 0) NOT NULL, payload json NOT NULL, \
       PRIMARY KEY (aggregate_type, aggregate_id, last_sequence))",
];

async fn appends<R>(
    name: &str,
    repo: R,
    clients: usize,
    count: usize,
    tenant: &domain::TenantId,
) -> anyhow::Result<Measurement>
where
    R: PersistedEventRepository + 'static,
{
    let store = Arc::new(PersistedEventStore::<R, KnowledgeSource>::new_event_store(
        repo,
    ));
    let tenant = tenant.clone();
    drive(name, clients, count, move |i| {
        let (store, tenant) = (store.clone(), tenant.clone());
        async move {
            let id = tenant.scope(uuid::Uuid::now_v7()).to_string();
            let context = store.load_aggregate(&id).await?;
            let metadata = EventMetadata {
                traceparent: None,
                tenant_id: tenant.to_string(),
                user_id: "bench-admin".into(),
                role: "admin".into(),
                correlation_id: i.to_string(),
                causation_id: None,
                idempotency_key: None,
                occurred_at: None,
            };
            let event = SourceEvent::SourceAdded {
                kind: SourceKind::Docs,
                name: format!("Docs {i}"),
                location: "https://docs.example.test".into(),
                settings: Default::default(),
            };
            store
                .commit(vec![event], context, metadata.into_map())
                .await?;
            Ok(())
        }
    })
    .await
}

/// Both stores, `count` appends each at `clients`; (ours, postgres-es).
pub async fn compare(
    owner: &PgPool,
    tenants: &TenantPool,
    clients: usize,
    count: usize,
) -> anyhow::Result<(Measurement, Measurement)> {
    for statement in POSTGRES_ES_SCHEMA {
        sqlx::query(statement).execute(owner).await?;
    }
    let tenant: domain::TenantId = "bench".parse()?;
    let ours = appends(
        "event store append: ours",
        PgEventRepository::new(tenants.clone()),
        clients,
        count,
        &tenant,
    )
    .await?;
    let theirs = appends(
        "event store append: postgres-es",
        postgres_es::PostgresEventRepository::new(owner.clone())
            .with_tables("pges_events", "pges_snapshots"),
        clients,
        count,
        &tenant,
    )
    .await?;
    Ok((ours, theirs))
}
