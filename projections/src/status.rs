//! Where each projection stands: the status row written with every applied event, its errors,
//! and how far behind the store it is.
use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::{PgConnection, PgPool};
use utoipa::ToSchema;

use crate::event::EventMeta;
use crate::projection::Projection;

/// Moves the projection's status past `meta` (inside the transaction that applied it).
pub async fn mark_applied(
    conn: &mut PgConnection,
    projection: &str,
    meta: &EventMeta,
) -> Result<(), sqlx::Error> {
    // One round trip: the status and the tenant's read-model version (the read cache's key,
    // docs/read-cache.md) move together, in the transaction that applied the event.
    sqlx::query!(
        "WITH version AS (
           INSERT INTO read_model_versions (tenant_id, projection, version)
           VALUES ($5, $1, nextval('read_model_version_seq'))
           ON CONFLICT (tenant_id, projection) DO UPDATE SET version = EXCLUDED.version)
         INSERT INTO projection_status (projection, applied_events, last_position, last_event_id,
           last_recorded_at, last_applied_at) VALUES ($1, 1, $2, $3, $4, now())
         ON CONFLICT (projection) DO UPDATE SET applied_events = projection_status.applied_events + 1,
           last_position = GREATEST(projection_status.last_position, $2), last_event_id = $3,
           last_recorded_at = $4, last_applied_at = now()",
        projection,
        meta.position,
        meta.event_id,
        meta.recorded_at,
        meta.tenant.as_str(),
    )
    .execute(conn)
    .await?;
    Ok(())
}

/// Creates the status row if it is missing.
pub async fn ensure(pool: &PgPool, projection: &str) -> Result<(), sqlx::Error> {
    sqlx::query!(
        "INSERT INTO projection_status (projection) VALUES ($1) ON CONFLICT DO NOTHING",
        projection
    )
    .execute(pool)
    .await?;
    Ok(())
}

/// Records the projection's last error in its status row.
pub async fn record_error(pool: &PgPool, projection: &str, error: &str) -> Result<(), sqlx::Error> {
    sqlx::query!(
        "INSERT INTO projection_status (projection, last_error, last_error_at) VALUES ($1, $2, now())
         ON CONFLICT (projection) DO UPDATE SET last_error = $2, last_error_at = now()",
        projection,
        error,
    )
    .execute(pool)
    .await?;
    Ok(())
}

/// A stalled consumer was recreated.
pub async fn stall_recovered(pool: &PgPool, projection: &str) -> Result<(), sqlx::Error> {
    sqlx::query!(
        "INSERT INTO projection_status (projection, stall_recoveries, last_stall_at)
         VALUES ($1, 1, now())
         ON CONFLICT (projection) DO UPDATE
            SET stall_recoveries = projection_status.stall_recoveries + 1, last_stall_at = now()",
        projection,
    )
    .execute(pool)
    .await?;
    Ok(())
}

/// A rebuild started: it reads up to `target` before the swap.
pub async fn rebuild_started(
    pool: &PgPool,
    projection: &str,
    target: i64,
) -> Result<(), sqlx::Error> {
    sqlx::query!(
        "INSERT INTO projection_status (projection, rebuild_started_at, rebuild_target,
                                        rebuild_position, rebuild_applied)
         VALUES ($1, now(), $2, 0, 0)
         ON CONFLICT (projection) DO UPDATE SET rebuild_started_at = now(), rebuild_target = $2,
           rebuild_position = 0, rebuild_applied = 0",
        projection,
        target,
    )
    .execute(pool)
    .await?;
    Ok(())
}

/// A rebuild's progress after a batch.
pub async fn rebuild_progressed(
    pool: &PgPool,
    projection: &str,
    position: i64,
    applied: u64,
) -> Result<(), sqlx::Error> {
    sqlx::query!(
        "UPDATE projection_status SET rebuild_position = $2, rebuild_applied = $3
          WHERE projection = $1",
        projection,
        position,
        applied as i64,
    )
    .execute(pool)
    .await?;
    Ok(())
}

/// A rebuild ended without its swap (failed): no progress to show any more.
pub async fn rebuild_abandoned(pool: &PgPool, projection: &str) -> Result<(), sqlx::Error> {
    sqlx::query!(
        "UPDATE projection_status SET rebuild_started_at = NULL, rebuild_target = NULL,
           rebuild_position = NULL, rebuild_applied = NULL WHERE projection = $1",
        projection,
    )
    .execute(pool)
    .await?;
    Ok(())
}

/// After a rebuild: the counts start over from what the rebuild applied.
pub async fn mark_rebuilt(
    conn: &mut PgConnection,
    projection: &str,
    applied: u64,
    position: i64,
) -> Result<(), sqlx::Error> {
    // Every tenant's answers may differ after a rebuild: every tenant with events gets a new
    // version of this projection (docs/read-cache.md). The tenants come from the events' tenant
    // index by skipping from one to the next, not by reading every event under the swap's lock.
    sqlx::query!(
        "INSERT INTO read_model_versions (tenant_id, projection, version)
         WITH RECURSIVE t AS (
           SELECT min(tenant_id) AS tenant_id FROM events
           UNION ALL
           SELECT (SELECT min(tenant_id) FROM events WHERE tenant_id > t.tenant_id)
             FROM t WHERE t.tenant_id IS NOT NULL)
         SELECT t.tenant_id, $1, nextval('read_model_version_seq') FROM t
          WHERE t.tenant_id IS NOT NULL
         ON CONFLICT (tenant_id, projection) DO UPDATE SET version = EXCLUDED.version",
        projection,
    )
    .execute(&mut *conn)
    .await?;
    sqlx::query!(
        "INSERT INTO projection_status (projection, applied_events, last_position, rebuilt_at)
         VALUES ($1, $2, $3, now()) ON CONFLICT (projection) DO UPDATE SET applied_events = $2,
           last_position = $3, rebuilt_at = now(), last_error = NULL, last_error_at = NULL,
           rebuild_started_at = NULL, rebuild_target = NULL, rebuild_position = NULL,
           rebuild_applied = NULL",
        projection,
        applied as i64,
        position,
    )
    .execute(conn)
    .await?;
    Ok(())
}

fn type_words(projection: &dyn Projection) -> Vec<&'static str> {
    projection
        .aggregate_types()
        .iter()
        .map(|t| t.as_str())
        .collect()
}

/// What a projection has done, and how far behind the event store it is.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ProjectionStatus {
    /// The projection.
    pub projection: String,
    /// Events applied since the last rebuild.
    pub applied_events: i64,
    /// Highest global position applied (events of different aggregates arrive in partition order,
    /// so lower positions may still be on their way while this one is applied).
    pub last_position: i64,
    /// Events of its aggregate types in the store that it has not applied (including dead letters).
    pub lag_events: i64,
    /// When behind: how old the newest applied event is; 0 when caught up.
    pub lag_seconds: f64,
    /// When it last applied an event.
    pub last_applied_at: Option<DateTime<Utc>>,
    /// Its last error, with causes.
    pub last_error: Option<String>,
    /// When that was.
    pub last_error_at: Option<DateTime<Utc>>,
    /// When it was last rebuilt.
    pub rebuilt_at: Option<DateTime<Utc>>,
    /// Dead letters not yet resolved.
    pub open_dead_letters: i64,
    /// The rebuild running now, if one is.
    pub rebuild: Option<RebuildProgress>,
    /// How often its consumer was found stalled and recreated.
    pub stall_recoveries: i64,
    /// When that last happened.
    pub last_stall_at: Option<DateTime<Utc>>,
}

/// How far a running rebuild got.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct RebuildProgress {
    /// When it started.
    pub started_at: DateTime<Utc>,
    /// Events applied to the copy so far.
    pub applied_events: i64,
    /// The store position read so far.
    pub position: i64,
    /// The store's last position of the projection's events when it started (it catches up
    /// with later ones in the swap).
    pub target_position: i64,
    /// `position / target_position`, 0 to 1.
    pub progress: f64,
}

#[derive(sqlx::FromRow)]
struct StatusRow {
    applied_events: Option<i64>,
    last_position: Option<i64>,
    last_applied_at: Option<DateTime<Utc>>,
    last_recorded_at: Option<DateTime<Utc>>,
    last_error: Option<String>,
    last_error_at: Option<DateTime<Utc>>,
    rebuilt_at: Option<DateTime<Utc>>,
    rebuild_started_at: Option<DateTime<Utc>>,
    rebuild_target: Option<i64>,
    rebuild_position: Option<i64>,
    rebuild_applied: Option<i64>,
    stall_recoveries: Option<i64>,
    last_stall_at: Option<DateTime<Utc>>,
    stored: i64,
    open: i64,
}

impl ProjectionStatus {
    /// The status of `projection`, with its exact lag.
    pub async fn load(pool: &PgPool, projection: &dyn Projection) -> Result<Self, sqlx::Error> {
        let types = type_words(projection);
        let row = sqlx::query_as!(
            StatusRow,
            r#"SELECT s.applied_events AS "applied_events?", s.last_position AS "last_position?",
                 s.last_applied_at, s.last_recorded_at, s.last_error, s.last_error_at, s.rebuilt_at,
                 s.rebuild_started_at, s.rebuild_target, s.rebuild_position, s.rebuild_applied,
                 s.stall_recoveries AS "stall_recoveries?", s.last_stall_at,
                 (SELECT count(*) FROM events WHERE aggregate_type = ANY($2)) AS "stored!",
                 (SELECT count(*) FROM dead_letters d
                   WHERE d.projection = $1 AND d.resolved_at IS NULL) AS "open!"
               FROM (SELECT $1::text AS projection) p
               LEFT JOIN projection_status s ON s.projection = p.projection"#,
            projection.name(),
            &types as &[&str],
        )
        .fetch_one(pool)
        .await?;
        let applied = row.applied_events.unwrap_or(0);
        let lag_events = (row.stored - applied).max(0);
        let lag_seconds = match (lag_events, row.last_recorded_at) {
            (0, _) => 0.0,
            (_, Some(t)) => (Utc::now() - t).num_milliseconds().max(0) as f64 / 1000.0,
            (_, None) => 1e9,
        };
        Ok(Self {
            projection: projection.name().to_string(),
            applied_events: applied,
            last_position: row.last_position.unwrap_or(0),
            lag_events,
            lag_seconds,
            last_applied_at: row.last_applied_at,
            last_error: row.last_error,
            last_error_at: row.last_error_at,
            rebuilt_at: row.rebuilt_at,
            open_dead_letters: row.open,
            stall_recoveries: row.stall_recoveries.unwrap_or(0),
            last_stall_at: row.last_stall_at,
            rebuild: row.rebuild_started_at.map(|started_at| {
                let target = row.rebuild_target.unwrap_or(0);
                let position = row.rebuild_position.unwrap_or(0);
                RebuildProgress {
                    started_at,
                    applied_events: row.rebuild_applied.unwrap_or(0),
                    position,
                    target_position: target,
                    progress: if target > 0 {
                        (position as f64 / target as f64).clamp(0.0, 1.0)
                    } else {
                        1.0
                    },
                }
            }),
        })
    }
}

/// How fresh a read model is, cheap enough for every read: a lookup of the status row and an
/// index range over the events stored after the last applied position (so its cost grows with
/// the lag, not with the history). `lag_events` is a lower bound: events of other partitions
/// below that position may still be on their way; `ProjectionStatus` has the exact count.
#[derive(Debug, Clone, Serialize, ToSchema, sqlx::FromRow)]
pub struct Freshness {
    /// Highest event position the read model has applied.
    pub position: i64,
    /// Events of its aggregate types stored after `position`.
    pub lag_events: i64,
    /// Age of the oldest of those events; 0 when there are none.
    pub lag_seconds: f64,
}

impl Freshness {
    /// The freshness of `projection`.
    pub async fn load(pool: &PgPool, projection: &dyn Projection) -> Result<Self, sqlx::Error> {
        let types = type_words(projection);
        sqlx::query_as!(
            Freshness,
            r#"WITH s AS (SELECT coalesce((SELECT last_position FROM projection_status
                                            WHERE projection = $1), 0) AS p)
               SELECT s.p AS "position!", count(e.position) AS "lag_events!",
                 greatest(coalesce(extract(epoch FROM now() - min(e.recorded_at))::float8, 0), 0)
                   AS "lag_seconds!"
               FROM s LEFT JOIN events e ON e.position > s.p AND e.aggregate_type = ANY($2)
               GROUP BY s.p"#,
            projection.name(),
            &types as &[&str],
        )
        .fetch_one(pool)
        .await
    }
}
