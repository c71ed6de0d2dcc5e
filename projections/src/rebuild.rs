//! Rebuilding a projection from position 0 of the event store, while the live read model keeps
//! answering. The copy is built in a schema of its own (`rebuild_<projection>`) selected with
//! `SET LOCAL search_path`, so the projection's statements name their tables without a schema
//! and stay the same statements the live runner uses; the swap moves the copy into `public`
//! under one short exclusive lock. DDL is the only SQL here that is assembled from names, and
//! the names are the projections' own constants.
use std::time::Instant;

use serde::Serialize;
use sqlx::{PgConnection, PgPool};
use utoipa::ToSchema;

use crate::event::Projected;
use crate::projection::{error_chain, ApplyError, Projection};
use crate::source::StoreSource;
use crate::status::{mark_rebuilt, record_error};

/// What a rebuild did.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct RebuildReport {
    /// The projection rebuilt.
    pub projection: String,
    /// Events read from the store (all aggregate types).
    pub events_read: u64,
    /// Events that changed something.
    pub events_applied: u64,
    /// How long it took.
    pub seconds: f64,
}

/// Why a rebuild did not finish.
#[derive(Debug, thiserror::Error)]
pub enum RebuildError {
    /// Another rebuild of the projection is running.
    #[error("a rebuild of this projection is already running")]
    InProgress,
    /// The database failed.
    #[error("database")]
    Database(#[from] sqlx::Error),
    /// An event could not be applied for a reason that may pass.
    #[error("applying an event failed")]
    Apply(#[from] ApplyError),
}

const REBUILD_BATCH: i64 = 2000;

fn lock_name(projection: &dyn Projection) -> String {
    format!("answers-rebuild:{}", projection.name())
}

/// The schema the copy is built in.
fn schema(projection: &dyn Projection) -> String {
    format!("rebuild_{}", projection.name())
}

/// Rebuilds `projection` into a copy and swaps it in.
#[tracing::instrument(skip_all, fields(projection = projection.name()), err)]
pub async fn rebuild(
    pool: &PgPool,
    projection: &dyn Projection,
) -> Result<RebuildReport, RebuildError> {
    let started = Instant::now();
    let mut lock = pool.acquire().await?;
    let locked: bool = sqlx::query_scalar("SELECT pg_try_advisory_lock(hashtextextended($1, 0))")
        .bind(lock_name(projection))
        .fetch_one(&mut *lock)
        .await?;
    if !locked {
        return Err(RebuildError::InProgress);
    }
    let result = rebuild_locked(pool, projection).await;
    if let Err(e) = &result {
        // A background rebuild has no caller to tell: the status does.
        let report = format!("rebuild failed: {}", error_chain(e));
        if let Err(status) = record_error(pool, projection.name(), &report).await {
            tracing::warn!(error = %status, %report, "could not record the failed rebuild in the status");
        }
        if let Err(status) = crate::status::rebuild_abandoned(pool, projection.name()).await {
            tracing::warn!(error = %status, "could not clear the failed rebuild's progress");
        }
    }
    let unlocked =
        sqlx::query_scalar::<_, bool>("SELECT pg_advisory_unlock(hashtextextended($1, 0))")
            .bind(lock_name(projection))
            .fetch_one(&mut *lock)
            .await;
    if !matches!(unlocked, Ok(true)) {
        // The lock is the session's: closing the connection is the sure way to drop it,
        // instead of handing a locked connection back to the pool.
        tracing::warn!(
            ?unlocked,
            "could not release the rebuild lock; closing its connection"
        );
        if let Err(e) = lock.close().await {
            tracing::warn!(error = %e, "closing the rebuild lock's connection failed");
        }
    }
    let (events_read, events_applied) = result?;
    Ok(RebuildReport {
        projection: projection.name().to_string(),
        events_read,
        events_applied,
        seconds: started.elapsed().as_secs_f64(),
    })
}

async fn use_copy(conn: &mut PgConnection, schema: &str) -> Result<(), sqlx::Error> {
    sqlx::query(&format!("SET LOCAL search_path TO {schema}, public"))
        .execute(conn)
        .await?;
    Ok(())
}

async fn rebuild_locked(
    pool: &PgPool,
    projection: &dyn Projection,
) -> Result<(u64, u64), RebuildError> {
    let schema = schema(projection);
    let mut tx = pool.begin().await?;
    sqlx::query(&format!("DROP SCHEMA IF EXISTS {schema} CASCADE"))
        .execute(&mut *tx)
        .await?;
    sqlx::query(&format!("CREATE SCHEMA {schema}"))
        .execute(&mut *tx)
        .await?;
    for table in projection.tables() {
        sqlx::query(&format!(
            "CREATE UNLOGGED TABLE {schema}.{table} (LIKE public.{table} INCLUDING ALL)"
        ))
        .execute(&mut *tx)
        .await?;
    }
    tx.commit().await?;
    let types: Vec<&str> = projection
        .aggregate_types()
        .iter()
        .map(|t| t.as_str())
        .collect();
    let target: i64 = sqlx::query_scalar(
        "SELECT coalesce(max(position), 0) FROM events WHERE aggregate_type = ANY($1)",
    )
    .bind(&types)
    .fetch_one(pool)
    .await?;
    crate::status::rebuild_started(pool, projection.name(), target).await?;
    let mut source = StoreSource::new(projection.aggregate_types(), REBUILD_BATCH);
    let mut applied = 0;
    // The bulk of the history, without blocking anyone.
    for batch in 1.. {
        let mut tx = pool.begin().await?;
        use_copy(&mut tx, &schema).await?;
        let Some(n) = replay_batch(&mut tx, projection, &mut source).await? else {
            break;
        };
        applied += n;
        tx.commit().await?;
        crate::status::rebuild_progressed(pool, projection.name(), source.position(), applied)
            .await?;
        // The copy starts empty: without fresh statistics the lookups a projection makes in
        // it keep a plan made for an empty table (a sequential scan), and the rebuild slows
        // down quadratically as the table fills.
        if batch == 1 || batch % 25 == 0 {
            for table in projection.tables() {
                sqlx::query(&format!("ANALYZE {schema}.{table}"))
                    .execute(pool)
                    .await?;
            }
        }
    }
    // The copy was filled without write-ahead log (unlogged: a crash mid-rebuild loses only
    // the copy, which the next rebuild drops anyway); made durable in one sequential pass
    // before the swap, outside its locks, so the live tables are blocked no longer than before.
    for table in projection.tables() {
        sqlx::query(&format!("ALTER TABLE {schema}.{table} SET LOGGED"))
            .execute(pool)
            .await?;
    }
    // The swap: block the live tables, catch up what arrived meanwhile, move the copy in.
    let mut tx = pool.begin().await?;
    for table in projection.tables() {
        sqlx::query(&format!(
            "LOCK TABLE public.{table} IN ACCESS EXCLUSIVE MODE"
        ))
        .execute(&mut *tx)
        .await?;
    }
    use_copy(&mut tx, &schema).await?;
    while let Some(n) = replay_batch(&mut tx, projection, &mut source).await? {
        applied += n;
    }
    for table in projection.tables() {
        // Grants, row-level security and its policies, as the live table has them
        // (docs/isolation.md): `LIKE .. INCLUDING ALL` copied none of them.
        sqlx::query("SELECT answers_copy_security($1::regclass, $2::regclass)")
            .bind(format!("public.{table}"))
            .bind(format!("{schema}.{table}"))
            .execute(&mut *tx)
            .await?;
        sqlx::query(&format!("DROP TABLE public.{table}"))
            .execute(&mut *tx)
            .await?;
        sqlx::query(&format!("ALTER TABLE {schema}.{table} SET SCHEMA public"))
            .execute(&mut *tx)
            .await?;
    }
    sqlx::query(&format!("DROP SCHEMA {schema}"))
        .execute(&mut *tx)
        .await?;
    mark_rebuilt(&mut tx, projection.name(), applied, source.position()).await?;
    tx.commit().await?;
    Ok((source.read, applied))
}

/// Applies the next batch of stored events; `None` when there was nothing left.
async fn replay_batch(
    conn: &mut PgConnection,
    projection: &dyn Projection,
    source: &mut StoreSource,
) -> Result<Option<u64>, RebuildError> {
    let Some(batch) = source.next_batch(&mut *conn).await? else {
        return Ok(None);
    };
    let mut events = Vec::with_capacity(batch.len());
    for envelope in &batch {
        match Projected::decode(envelope) {
            Ok(event) => events.push(event),
            Err(e) => {
                tracing::warn!(event_id = %envelope.event_id, reason = %e.report(), "rebuild skipped an undecodable event")
            }
        }
    }
    Ok(Some(projection.apply_batch(&mut *conn, &events).await?))
}
