use cqrs_es::persist::{
    PersistedEventRepository, PersistenceError, ReplayStream, SerializedEvent, SerializedSnapshot,
};
use cqrs_es::Aggregate;
use domain::TenantId;
use futures::TryStreamExt;
use serde_json::Value;
use sqlx::postgres::PgRow;
use sqlx::{PgPool, Postgres, Row, Transaction};
use uuid::Uuid;

use crate::{tenant_of_aggregate, EventMetadata, TenantPool};

/// A cqrs-es event repository on this project's `events` table. Event-sourced only: snapshots
/// are not kept (aggregates here are short; add them when a measurement says so).
///
/// It reads and writes through the API's [`TenantPool`]: each load runs in a transaction of the
/// tenant the aggregate id names, each append in one of the tenant its metadata names, and the
/// row-level security policies refuse an event whose `tenant_id` is not that tenant's.
#[derive(Clone)]
pub struct PgEventRepository {
    pool: TenantPool,
    stream_channel_size: usize,
}

const SELECT_EVENTS: &str = "SELECT aggregate_type, aggregate_id, sequence, event_type, \
     event_version, payload, metadata FROM events";

impl PgEventRepository {
    /// A repository on the API's `pool`.
    pub fn new(pool: TenantPool) -> Self {
        Self {
            pool,
            stream_channel_size: 256,
        }
    }

    fn to_event(row: &PgRow) -> Result<SerializedEvent, PersistenceError> {
        let sequence: i64 = row.try_get("sequence").map_err(unknown)?;
        Ok(SerializedEvent {
            aggregate_type: row.try_get("aggregate_type").map_err(unknown)?,
            aggregate_id: row.try_get("aggregate_id").map_err(unknown)?,
            sequence: usize::try_from(sequence).map_err(unknown)?,
            event_type: row.try_get("event_type").map_err(unknown)?,
            event_version: row.try_get("event_version").map_err(unknown)?,
            payload: row.try_get("payload").map_err(unknown)?,
            metadata: row.try_get("metadata").map_err(unknown)?,
        })
    }

    async fn fetch(
        &self,
        aggregate_type: &str,
        aggregate_id: &str,
        after_sequence: usize,
    ) -> Result<Vec<SerializedEvent>, PersistenceError> {
        let tenant = tenant_of(aggregate_id)?;
        let mut tx = self.pool.begin(&tenant).await.map_err(from_sqlx)?;
        let rows = sqlx::query(&format!(
            "{SELECT_EVENTS} WHERE aggregate_type = $1 AND aggregate_id = $2 AND sequence > $3 \
             ORDER BY sequence"
        ))
        .bind(aggregate_type)
        .bind(aggregate_id)
        .bind(i64::try_from(after_sequence).map_err(unknown)?)
        .fetch_all(&mut *tx)
        .await
        .map_err(from_sqlx)?;
        // Read-only: dropped, its ROLLBACK goes out as the connection returns to the pool.
        drop(tx);
        rows.iter().map(Self::to_event).collect()
    }

    async fn insert(
        tx: &mut Transaction<'_, Postgres>,
        event: &SerializedEvent,
        meta: &EventMetadata,
    ) -> Result<(), PersistenceError> {
        sqlx::query!(
            "INSERT INTO events (aggregate_type, aggregate_id, sequence, event_type, event_version,
               payload, metadata, event_id, tenant_id, recorded_at, actor_id, actor_role,
               correlation_id, causation_id, idempotency_key)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, COALESCE($10, now()), $11, $12, $13, $14, $15)",
            event.aggregate_type,
            event.aggregate_id,
            i64::try_from(event.sequence).map_err(unknown)?,
            event.event_type,
            event.event_version,
            event.payload,
            event.metadata,
            Uuid::now_v7(),
            meta.tenant_id,
            meta.occurred_at,
            meta.user_id,
            meta.role,
            meta.correlation_id,
            meta.causation_id,
            meta.idempotency_key,
        )
        .execute(&mut **tx)
        .await
        .map_err(from_sqlx)?;
        Ok(())
    }

    /// Marks the command's idempotency key as settled by these events. Fails, rolling the events
    /// back, when the key is no longer pending (another request took it over after our lease ran
    /// out), so one key never stores two sets of events.
    async fn settle_idempotency_key(
        tx: &mut Transaction<'_, Postgres>,
        meta: &EventMetadata,
        key: &str,
        events: &[SerializedEvent],
    ) -> Result<(), PersistenceError> {
        let (first, last) = (&events[0], &events[events.len() - 1]);
        let settled = sqlx::query!(
            "UPDATE idempotency_keys SET state = 'committed', aggregate_type = $4,
               aggregate_id = $5, first_sequence = $6, last_sequence = $7, settled_at = now()
             WHERE tenant_id = $1 AND user_id = $2 AND idempotency_key = $3 AND state = 'pending'",
            meta.tenant_id,
            meta.user_id,
            key,
            first.aggregate_type,
            first.aggregate_id,
            i64::try_from(first.sequence).map_err(unknown)?,
            i64::try_from(last.sequence).map_err(unknown)?,
        )
        .execute(&mut **tx)
        .await
        .map_err(from_sqlx)?;
        if settled.rows_affected() != 1 {
            // Surfaces as a conflict: the other holder of the key answers for it.
            return Err(PersistenceError::OptimisticLockError);
        }
        Ok(())
    }

    /// Streams the rows of `query` read in a transaction of `tenant`.
    fn replay(&self, tenant: TenantId, query: String, binds: Vec<String>) -> ReplayStream {
        let (mut feed, stream) = ReplayStream::new(self.stream_channel_size);
        let pool = self.pool.clone();
        tokio::spawn(async move {
            let mut tx = match pool.begin(&tenant).await {
                Ok(tx) => tx,
                Err(e) => {
                    let _ = feed.push(Err(from_sqlx(e))).await;
                    return;
                }
            };
            let q = binds
                .iter()
                .fold(sqlx::query(&query), |q, value| q.bind(value));
            let mut rows = q.fetch(&mut *tx);
            loop {
                let item = match rows.try_next().await {
                    Ok(Some(row)) => Self::to_event(&row),
                    Ok(None) => return,
                    Err(e) => Err(from_sqlx(e)),
                };
                let failed = item.is_err();
                if feed.push(item).await.is_err() || failed {
                    return;
                }
            }
        });
        stream
    }
}

impl PersistedEventRepository for PgEventRepository {
    async fn get_events<A: Aggregate>(
        &self,
        aggregate_id: &str,
    ) -> Result<Vec<SerializedEvent>, PersistenceError> {
        self.fetch(A::TYPE, aggregate_id, 0).await
    }

    async fn get_last_events<A: Aggregate>(
        &self,
        aggregate_id: &str,
        last_sequence: usize,
    ) -> Result<Vec<SerializedEvent>, PersistenceError> {
        self.fetch(A::TYPE, aggregate_id, last_sequence).await
    }

    async fn get_snapshot<A: Aggregate>(
        &self,
        _aggregate_id: &str,
    ) -> Result<Option<SerializedSnapshot>, PersistenceError> {
        Ok(None)
    }

    #[tracing::instrument(skip_all, fields(aggregate_type = A::TYPE, events = events.len()), err)]
    async fn persist<A: Aggregate>(
        &self,
        events: &[SerializedEvent],
        _snapshot_update: Option<(String, Value, usize)>,
    ) -> Result<(), PersistenceError> {
        if events.is_empty() {
            return Ok(());
        }
        // One command's events share their metadata (cqrs-es copies it to each).
        let meta = EventMetadata::from_value(&events[0].metadata)
            .map_err(|e| PersistenceError::UnknownError(Box::new(e)))?;
        let tenant = TenantId::parse(&meta.tenant_id)
            .map_err(|e| PersistenceError::UnknownError(Box::new(e)))?;
        let mut tx = self.pool.begin(&tenant).await.map_err(from_sqlx)?;
        for event in events {
            Self::insert(&mut tx, event, &meta).await?;
        }
        if let Some(key) = &meta.idempotency_key {
            Self::settle_idempotency_key(&mut tx, &meta, key, events).await?;
        }
        tx.commit().await.map_err(from_sqlx)?;
        Ok(())
    }

    async fn stream_events<A: Aggregate>(
        &self,
        aggregate_id: &str,
    ) -> Result<ReplayStream, PersistenceError> {
        Ok(self.replay(
            tenant_of(aggregate_id)?,
            format!(
                "{SELECT_EVENTS} WHERE aggregate_type = $1 AND aggregate_id = $2 ORDER BY sequence"
            ),
            vec![A::TYPE.to_string(), aggregate_id.to_string()],
        ))
    }

    /// Refused: the API's role reads one tenant at a time; every aggregate of every tenant is
    /// the relay's and the projections' business (`EventReader`, on the owner's pool).
    async fn stream_all_events<A: Aggregate>(&self) -> Result<ReplayStream, PersistenceError> {
        Err(PersistenceError::UnknownError(
            "stream_all_events crosses tenants: read the store with EventReader instead".into(),
        ))
    }
}

/// The bulk append's columns, one array each.
#[derive(Default)]
struct BulkColumns {
    aggregate_type: Vec<String>,
    aggregate_id: Vec<String>,
    sequence: Vec<i64>,
    event_type: Vec<String>,
    event_version: Vec<String>,
    payload: Vec<Value>,
    metadata: Vec<Value>,
    event_id: Vec<Uuid>,
    tenant_id: Vec<String>,
    recorded_at: Vec<Option<chrono::DateTime<chrono::Utc>>>,
    actor_id: Vec<String>,
    actor_role: Vec<String>,
    correlation_id: Vec<String>,
    causation_id: Vec<Option<String>>,
}

impl BulkColumns {
    fn push(
        &mut self,
        event: &SerializedEvent,
        meta: EventMetadata,
    ) -> Result<(), PersistenceError> {
        self.aggregate_type.push(event.aggregate_type.clone());
        self.aggregate_id.push(event.aggregate_id.clone());
        self.sequence
            .push(i64::try_from(event.sequence).map_err(unknown)?);
        self.event_type.push(event.event_type.clone());
        self.event_version.push(event.event_version.clone());
        self.payload.push(event.payload.clone());
        self.metadata.push(event.metadata.clone());
        self.event_id.push(Uuid::now_v7());
        self.tenant_id.push(meta.tenant_id);
        self.recorded_at.push(meta.occurred_at);
        self.actor_id.push(meta.user_id);
        self.actor_role.push(meta.role);
        self.correlation_id.push(meta.correlation_id);
        self.causation_id.push(meta.causation_id);
        Ok(())
    }
}

/// Appends the events of many aggregates (of any tenant) in one transaction and one
/// statement, for bulk loads (benchmarks, imports, the seed), through the owner's `pool`:
/// it crosses tenants. Each event carries its own metadata, as from `persist`;
/// the same constraints hold (a duplicate sequence is an `OptimisticLockError`).
pub async fn append_bulk(
    pool: &PgPool,
    events: &[SerializedEvent],
) -> Result<(), PersistenceError> {
    if events.is_empty() {
        return Ok(());
    }
    let mut columns = BulkColumns::default();
    for event in events {
        let meta = EventMetadata::from_value(&event.metadata)
            .map_err(|e| PersistenceError::UnknownError(Box::new(e)))?;
        columns.push(event, meta)?;
    }
    sqlx::query(
        "INSERT INTO events (aggregate_type, aggregate_id, sequence, event_type, event_version, \
           payload, metadata, event_id, tenant_id, recorded_at, actor_id, actor_role, \
           correlation_id, causation_id) \
         SELECT t, i, s, et, ev, p, m, id, tn, COALESCE(at, now()), a, r, c, cz \
         FROM UNNEST($1::text[], $2::text[], $3::bigint[], $4::text[], $5::text[], $6::jsonb[], \
           $7::jsonb[], $8::uuid[], $9::text[], $10::timestamptz[], $11::text[], $12::text[], \
           $13::text[], $14::text[]) AS u(t, i, s, et, ev, p, m, id, tn, at, a, r, c, cz)",
    )
    .bind(columns.aggregate_type)
    .bind(columns.aggregate_id)
    .bind(columns.sequence)
    .bind(columns.event_type)
    .bind(columns.event_version)
    .bind(columns.payload)
    .bind(columns.metadata)
    .bind(columns.event_id)
    .bind(columns.tenant_id)
    .bind(columns.recorded_at)
    .bind(columns.actor_id)
    .bind(columns.actor_role)
    .bind(columns.correlation_id)
    .bind(columns.causation_id)
    .execute(pool)
    .await
    .map_err(from_sqlx)?;
    Ok(())
}

/// The tenant of an aggregate id this repository is asked for.
fn tenant_of(aggregate_id: &str) -> Result<domain::TenantId, PersistenceError> {
    tenant_of_aggregate(aggregate_id).ok_or_else(|| {
        PersistenceError::UnknownError(
            format!("aggregate id {aggregate_id:?} names no tenant").into(),
        )
    })
}

fn unknown<E: std::error::Error + Send + Sync + 'static>(e: E) -> PersistenceError {
    PersistenceError::UnknownError(Box::new(e))
}

/// A duplicate (aggregate, sequence) is the optimistic-concurrency conflict; any other unique
/// violation is a bug and must not masquerade as one (postgres-es maps every 23505 to a conflict).
fn from_sqlx(err: sqlx::Error) -> PersistenceError {
    match &err {
        sqlx::Error::Database(db) if db.constraint() == Some("events_pkey") => {
            PersistenceError::OptimisticLockError
        }
        sqlx::Error::Io(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::Tls(_)
        | sqlx::Error::WorkerCrashed => PersistenceError::ConnectionError(Box::new(err)),
        _ => PersistenceError::UnknownError(Box::new(err)),
    }
}
