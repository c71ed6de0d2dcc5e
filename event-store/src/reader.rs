use std::collections::VecDeque;
use std::time::Duration;

use chrono::{DateTime, Utc};
use futures::Stream;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sqlx::postgres::PgRow;
use sqlx::{PgPool, Row};
use uuid::Uuid;

/// Where a reader stands: after the event at (`transaction_id`, `position`). The pair, not the
/// position alone, because positions are handed out at insert time and commit out of order.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
pub struct Checkpoint {
    pub transaction_id: u64,
    pub position: i64,
}

impl Checkpoint {
    /// Before the first event.
    pub const START: Checkpoint = Checkpoint {
        transaction_id: 0,
        position: 0,
    };
}

/// One committed event with everything the store knows of it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StoredEvent {
    pub event_id: Uuid,
    pub position: i64,
    pub transaction_id: u64,
    pub aggregate_type: String,
    pub aggregate_id: String,
    pub sequence: i64,
    pub event_type: String,
    pub event_version: String,
    pub payload: Value,
    pub metadata: Value,
    pub tenant_id: String,
    pub recorded_at: DateTime<Utc>,
    pub actor_id: String,
    pub actor_role: String,
    pub correlation_id: String,
    pub causation_id: Option<String>,
    pub idempotency_key: Option<String>,
}

impl StoredEvent {
    pub fn checkpoint(&self) -> Checkpoint {
        Checkpoint {
            transaction_id: self.transaction_id,
            position: self.position,
        }
    }
}

/// Read by column name with `try_get` (a type mismatch is an error, never a panic); the
/// transaction id arrives as text and is parsed here.
impl<'r> sqlx::FromRow<'r, PgRow> for StoredEvent {
    fn from_row(row: &'r PgRow) -> Result<Self, sqlx::Error> {
        // Selected as text (sqlx has no xid8 type) under another name: an ORDER BY on the
        // column's own name would otherwise sort the text, putting 10000 before 9999.
        let tx: String = row.try_get("transaction_id_text")?;
        Ok(Self {
            event_id: row.try_get("event_id")?,
            position: row.try_get("position")?,
            transaction_id: tx.parse().map_err(|e| sqlx::Error::ColumnDecode {
                index: "transaction_id".into(),
                source: Box::new(e),
            })?,
            aggregate_type: row.try_get("aggregate_type")?,
            aggregate_id: row.try_get("aggregate_id")?,
            sequence: row.try_get("sequence")?,
            event_type: row.try_get("event_type")?,
            event_version: row.try_get("event_version")?,
            payload: row.try_get("payload")?,
            metadata: row.try_get("metadata")?,
            tenant_id: row.try_get("tenant_id")?,
            recorded_at: row.try_get("recorded_at")?,
            actor_id: row.try_get("actor_id")?,
            actor_role: row.try_get("actor_role")?,
            correlation_id: row.try_get("correlation_id")?,
            causation_id: row.try_get("causation_id")?,
            idempotency_key: row.try_get("idempotency_key")?,
        })
    }
}

/// Reads every committed event exactly once, in an order that a later commit can never get
/// behind: only events of transactions older than the oldest one still running are returned
/// (docs/event-store.md, "Reading in commit-safe order").
#[derive(Clone)]
pub struct EventReader {
    pool: PgPool,
}

impl EventReader {
    pub fn new(pool: PgPool) -> Self {
        Self { pool }
    }

    /// Up to `limit` events after `after`, in (transaction_id, position) order.
    pub async fn read_batch(
        &self,
        after: Checkpoint,
        limit: i64,
    ) -> Result<Vec<StoredEvent>, sqlx::Error> {
        read_batch(&self.pool, after, limit).await
    }

    /// An endless stream of events after `after`, polling every `idle` when caught up. It ends
    /// only with the first database error, which it yields.
    pub fn stream(
        &self,
        after: Checkpoint,
        batch_size: i64,
        idle: Duration,
    ) -> impl Stream<Item = Result<StoredEvent, sqlx::Error>> + Send + 'static {
        struct State {
            reader: EventReader,
            checkpoint: Checkpoint,
            buffer: VecDeque<StoredEvent>,
            failed: bool,
        }
        let state = State {
            reader: self.clone(),
            checkpoint: after,
            buffer: VecDeque::new(),
            failed: false,
        };
        futures::stream::unfold(state, move |mut s| async move {
            if s.failed {
                return None;
            }
            loop {
                if let Some(event) = s.buffer.pop_front() {
                    s.checkpoint = event.checkpoint();
                    return Some((Ok(event), s));
                }
                match s.reader.read_batch(s.checkpoint, batch_size).await {
                    Ok(batch) if batch.is_empty() => tokio::time::sleep(idle).await,
                    Ok(batch) => s.buffer.extend(batch),
                    Err(e) => {
                        s.failed = true;
                        return Some((Err(e), s));
                    }
                }
            }
        })
    }
}

/// Every column of a stored event; `xid8` as text (sqlx has no such type) under another name,
/// since an ORDER BY on the column's own name would sort the text (10000 before 9999).
const STORED_COLUMNS: &str = "SELECT event_id, position, transaction_id::text AS transaction_id_text, \
    aggregate_type, aggregate_id, sequence, event_type, event_version, payload, metadata, tenant_id, \
    recorded_at, actor_id, actor_role, correlation_id, causation_id, idempotency_key FROM events";

/// [`EventReader::read_batch`] on any executor, e.g. the connection that holds the relay's lock.
#[tracing::instrument(skip_all, fields(after_tx = after.transaction_id, after_pos = after.position), err)]
pub async fn read_batch<'e, E: sqlx::PgExecutor<'e>>(
    executor: E,
    after: Checkpoint,
    limit: i64,
) -> Result<Vec<StoredEvent>, sqlx::Error> {
    sqlx::query_as(&format!(
        "{STORED_COLUMNS} \
         WHERE (transaction_id, position) > ($1::text::xid8, $2) \
           AND transaction_id < pg_snapshot_xmin(pg_current_snapshot()) \
         ORDER BY transaction_id, position \
         LIMIT $3"
    ))
    .bind(after.transaction_id.to_string())
    .bind(after.position)
    .bind(limit)
    .fetch_all(executor)
    .await
}

/// One aggregate's events in sequence order, up to `until` (by recorded time) when given: what
/// point-in-time replays start from.
pub async fn aggregate_events(
    pool: &PgPool,
    aggregate_type: &str,
    aggregate_id: &str,
    until: Option<DateTime<Utc>>,
) -> Result<Vec<StoredEvent>, sqlx::Error> {
    sqlx::query_as(&format!(
        "{STORED_COLUMNS} WHERE aggregate_type = $1 AND aggregate_id = $2 \
           AND ($3::timestamptz IS NULL OR recorded_at <= $3) \
         ORDER BY sequence"
    ))
    .bind(aggregate_type)
    .bind(aggregate_id)
    .bind(until)
    .fetch_all(pool)
    .await
}

/// A tenant's events recorded in `[from, to)`, in global position order, a page at a time.
pub async fn tenant_events_page(
    pool: &PgPool,
    tenant_id: &str,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
    after_position: i64,
    limit: i64,
) -> Result<Vec<StoredEvent>, sqlx::Error> {
    sqlx::query_as(&format!(
        "{STORED_COLUMNS} WHERE tenant_id = $1 AND recorded_at >= $2 AND recorded_at < $3 AND position > $4 \
         ORDER BY position LIMIT $5"
    ))
    .bind(tenant_id)
    .bind(from)
    .bind(to)
    .bind(after_position)
    .bind(limit)
    .fetch_all(pool)
    .await
}
