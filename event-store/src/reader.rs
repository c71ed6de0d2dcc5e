use std::collections::VecDeque;
use std::time::Duration;

use chrono::{DateTime, Utc};
use futures::Stream;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

/// Where a reader stands: after the event at (`transaction_id`, `position`). The pair, not the
/// position alone, because positions are handed out at insert time and commit out of order.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
pub struct Checkpoint {
    /// The transaction of the last event read.
    pub transaction_id: u64,
    /// The position of the last event read.
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
    /// The event's own id (UUIDv7), unique in the store.
    pub event_id: Uuid,
    /// Global position in the store, handed out at insert time.
    pub position: i64,
    /// The inserting transaction (`xid8`); with `position` it orders commits.
    pub transaction_id: u64,
    /// The kind of aggregate: `tenant`, `conversation` or `knowledge_source`.
    pub aggregate_type: String,
    /// The aggregate's id: the tenant id for a tenant, `tenant/uuid` for the others.
    pub aggregate_id: String,
    /// The aggregate's version after this event (1 for its first).
    pub sequence: i64,
    /// The event's type: its variant name, e.g. `QuestionAsked`.
    pub event_type: String,
    /// The version of the payload's shape (upcasters key on it).
    pub event_version: String,
    /// The event as JSON: `{"EventType": {...fields}}`.
    pub payload: Value,
    /// The command's metadata as stored beside the event.
    pub metadata: Value,
    /// The tenant the event belongs to.
    pub tenant_id: String,
    /// When the command was accepted.
    pub recorded_at: DateTime<Utc>,
    /// The user who sent the command.
    pub actor_id: String,
    /// The role the user acted in.
    pub actor_role: String,
    /// The request that caused the event (the `X-Request-Id`).
    pub correlation_id: String,
    /// The event or message that caused the command, when one did.
    pub causation_id: Option<String>,
    /// The command's `Idempotency-Key`, when it had one.
    pub idempotency_key: Option<String>,
}

impl StoredEvent {
    /// Where a reader stands after this event.
    pub fn checkpoint(&self) -> Checkpoint {
        Checkpoint {
            transaction_id: self.transaction_id,
            position: self.position,
        }
    }
}

/// A stored event as its checked query returns it: the `xid8` transaction id as text (sqlx has
/// no such type), selected under another name since an ORDER BY on the column's own name would
/// sort the text (10000 before 9999).
struct StoredRow {
    event_id: Uuid,
    position: i64,
    transaction_id_text: String,
    aggregate_type: String,
    aggregate_id: String,
    sequence: i64,
    event_type: String,
    event_version: String,
    payload: Value,
    metadata: Value,
    tenant_id: String,
    recorded_at: DateTime<Utc>,
    actor_id: String,
    actor_role: String,
    correlation_id: String,
    causation_id: Option<String>,
    idempotency_key: Option<String>,
}

impl TryFrom<StoredRow> for StoredEvent {
    type Error = sqlx::Error;

    /// An unreadable transaction id is an error, never a default.
    fn try_from(r: StoredRow) -> Result<Self, sqlx::Error> {
        Ok(Self {
            event_id: r.event_id,
            position: r.position,
            transaction_id: r.transaction_id_text.parse().map_err(|e| {
                sqlx::Error::ColumnDecode {
                    index: "transaction_id".into(),
                    source: Box::new(e),
                }
            })?,
            aggregate_type: r.aggregate_type,
            aggregate_id: r.aggregate_id,
            sequence: r.sequence,
            event_type: r.event_type,
            event_version: r.event_version,
            payload: r.payload,
            metadata: r.metadata,
            tenant_id: r.tenant_id,
            recorded_at: r.recorded_at,
            actor_id: r.actor_id,
            actor_role: r.actor_role,
            correlation_id: r.correlation_id,
            causation_id: r.causation_id,
            idempotency_key: r.idempotency_key,
        })
    }
}

fn events(rows: Vec<StoredRow>) -> Result<Vec<StoredEvent>, sqlx::Error> {
    rows.into_iter().map(StoredEvent::try_from).collect()
}

/// Reads every committed event exactly once, in an order that a later commit can never get
/// behind: only events of transactions older than the oldest one still running are returned
/// (docs/event-store.md, "Reading in commit-safe order").
#[derive(Clone)]
pub struct EventReader {
    pool: PgPool,
}

impl EventReader {
    /// A reader on `pool`.
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

/// [`EventReader::read_batch`] on any executor, e.g. the connection that holds the relay's lock.
#[tracing::instrument(skip_all, fields(after_tx = after.transaction_id, after_pos = after.position), err)]
pub async fn read_batch<'e, E: sqlx::PgExecutor<'e>>(
    executor: E,
    after: Checkpoint,
    limit: i64,
) -> Result<Vec<StoredEvent>, sqlx::Error> {
    let rows = sqlx::query_as!(
        StoredRow,
        r#"SELECT event_id, position, transaction_id::text AS "transaction_id_text!",
             aggregate_type, aggregate_id, sequence, event_type, event_version, payload, metadata,
             tenant_id, recorded_at, actor_id, actor_role, correlation_id, causation_id,
             idempotency_key
           FROM events
           WHERE (transaction_id, position) > ($1::text::xid8, $2)
             AND transaction_id < pg_snapshot_xmin(pg_current_snapshot())
           ORDER BY transaction_id, position
           LIMIT $3"#,
        after.transaction_id.to_string(),
        after.position,
        limit,
    )
    .fetch_all(executor)
    .await?;
    events(rows)
}

/// One aggregate's events in sequence order, up to `until` (by recorded time) when given: what
/// point-in-time replays start from.
pub async fn aggregate_events(
    conn: &mut PgConnection,
    aggregate_type: &str,
    aggregate_id: &str,
    until: Option<DateTime<Utc>>,
) -> Result<Vec<StoredEvent>, sqlx::Error> {
    let rows = sqlx::query_as!(
        StoredRow,
        r#"SELECT event_id, position, transaction_id::text AS "transaction_id_text!",
             aggregate_type, aggregate_id, sequence, event_type, event_version, payload, metadata,
             tenant_id, recorded_at, actor_id, actor_role, correlation_id, causation_id,
             idempotency_key
           FROM events
           WHERE aggregate_type = $1 AND aggregate_id = $2
             AND ($3::timestamptz IS NULL OR recorded_at <= $3)
           ORDER BY sequence"#,
        aggregate_type,
        aggregate_id,
        until,
    )
    .fetch_all(conn)
    .await?;
    events(rows)
}

/// A tenant's events recorded in `[from, to)`, in global position order, a page at a time.
pub async fn tenant_events_page(
    conn: &mut PgConnection,
    tenant_id: &str,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
    after_position: i64,
    limit: i64,
) -> Result<Vec<StoredEvent>, sqlx::Error> {
    let rows = sqlx::query_as!(
        StoredRow,
        r#"SELECT event_id, position, transaction_id::text AS "transaction_id_text!",
             aggregate_type, aggregate_id, sequence, event_type, event_version, payload, metadata,
             tenant_id, recorded_at, actor_id, actor_role, correlation_id, causation_id,
             idempotency_key
           FROM events
           WHERE tenant_id = $1 AND recorded_at >= $2 AND recorded_at < $3 AND position > $4
           ORDER BY position LIMIT $5"#,
        tenant_id,
        from,
        to,
        after_position,
        limit,
    )
    .fetch_all(conn)
    .await?;
    events(rows)
}
