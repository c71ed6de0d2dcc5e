//! The projection runtime: Kafka consumer group → one Postgres transaction per event (read
//! model change + status row) → offset stored. Poison events go to the dead-letter table and
//! topic; anything else that fails stops the runner without storing the offset, so the event is
//! delivered again after the restart and applied then (projections skip what they already hold).
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use event_store::{read_batch, Checkpoint};
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::error::KafkaError;
use rdkafka::message::{BorrowedMessage, Message};
use rdkafka::producer::{FutureProducer, FutureRecord};
use serde::Serialize;
use sqlx::{PgConnection, PgPool, Row};
use streaming::{ensure_topics, Envelope, KafkaSettings};
use utoipa::ToSchema;

#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    /// The event can never be applied (undecodable payload, impossible for this read model).
    #[error("poison event: {0}")]
    Poison(String),
    /// The database refused the change for good: a constraint or a data error. Applying the
    /// same event again would fail the same way, so it is dead-lettered like a poison event.
    #[error("the database refused the change")]
    Refused(#[source] sqlx::Error),
    /// Applying failed for a reason that may pass (database down, lock timeout, serialisation).
    #[error("transient failure")]
    Transient(#[source] sqlx::Error),
}

impl ApplyError {
    /// Whether the event itself is at fault (dead-letter it and go on) rather than the
    /// moment (stop, back off and deliver it again).
    pub fn is_poison(&self) -> bool {
        matches!(self, ApplyError::Poison(_) | ApplyError::Refused(_))
    }

    /// The error with its causes, for the dead-letter record and the status row.
    pub fn report(&self) -> String {
        error_chain(self)
    }
}

/// An error and its `source()` chain on one line.
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        text.push_str(": ");
        text.push_str(&c.to_string());
        cause = c.source();
    }
    text
}

/// How a database error's SQLSTATE class decides its fate: integrity constraint violations
/// (23) and data exceptions (22) are the event's fault; everything else (connection 08,
/// serialisation and deadlocks 40, resources 53, operator intervention 57, ...) may pass.
pub fn sqlstate_is_permanent(code: &str) -> bool {
    code.starts_with("23") || code.starts_with("22")
}

impl From<sqlx::Error> for ApplyError {
    fn from(e: sqlx::Error) -> Self {
        let permanent = match &e {
            sqlx::Error::Database(db) => db.code().is_some_and(|c| sqlstate_is_permanent(&c)),
            // A stored value of the wrong type: retrying reads the same value.
            sqlx::Error::ColumnDecode { .. } | sqlx::Error::Decode(_) => true,
            _ => false,
        };
        if permanent {
            ApplyError::Refused(e)
        } else {
            ApplyError::Transient(e)
        }
    }
}

/// The pause before restart number `attempt` (1-based) of a failing runner: exponential from
/// 200 ms, capped at `cap`, with jitter (between half and all of it) so that runners failing
/// together do not retry in lockstep.
pub fn backoff(attempt: u32, cap: Duration, jitter: f64) -> Duration {
    let exp = Duration::from_millis(200).saturating_mul(1u32 << attempt.saturating_sub(1).min(16));
    let full = exp.min(cap);
    full.mul_f64(0.5 + 0.5 * jitter.clamp(0.0, 1.0))
}

/// Why a read model could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error("the read model cannot be queried")]
    Database(#[from] sqlx::Error),
    /// A stored row does not decode: an error, never silently an empty value.
    #[error("a stored {what} is unreadable")]
    Unreadable {
        what: &'static str,
        #[source]
        source: serde_json::Error,
    },
}

impl From<ReadError> for ApplyError {
    fn from(e: ReadError) -> Self {
        match e {
            ReadError::Database(e) => e.into(),
            e @ ReadError::Unreadable { .. } => ApplyError::Poison(error_chain(&e)),
        }
    }
}

/// Decodes a JSON column of a stored row.
pub fn stored<T: serde::de::DeserializeOwned>(
    what: &'static str,
    value: serde_json::Value,
) -> Result<T, ReadError> {
    serde_json::from_value(value).map_err(|source| ReadError::Unreadable { what, source })
}

/// Decodes a JSON column while applying an event: a row that cannot be read makes the event
/// poison for that row (it is dead-lettered), never a reset to an empty value written back.
pub fn stored_for_apply<T: serde::de::DeserializeOwned>(
    what: &'static str,
    value: serde_json::Value,
) -> Result<T, ApplyError> {
    serde_json::from_value(value)
        .map_err(|e| ApplyError::Poison(format!("the stored {what} is unreadable: {e}")))
}

#[derive(Debug, thiserror::Error)]
pub enum RunnerError {
    #[error("kafka: {0}")]
    Kafka(#[from] KafkaError),
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
    #[error("applying an event failed")]
    Apply(#[from] ApplyError),
}

/// The event's payload as the domain type, or a poison event.
pub fn decode<E: serde::de::DeserializeOwned>(event: &Envelope) -> Result<E, ApplyError> {
    serde_json::from_value(event.payload.clone())
        .map_err(|e| ApplyError::Poison(format!("undecodable {}: {e}", event.event_type)))
}

/// The UUID of a tenant-scoped aggregate (`tenant/uuid`), or a poison event.
pub fn object_uuid(event: &Envelope) -> Result<uuid::Uuid, ApplyError> {
    event
        .aggregate_id
        .rsplit_once('/')
        .and_then(|(_, id)| uuid::Uuid::parse_str(id).ok())
        .ok_or_else(|| {
            ApplyError::Poison(format!(
                "`{}` is not a tenant-scoped id",
                event.aggregate_id
            ))
        })
}

#[async_trait]
pub trait Projection: Send + Sync + 'static {
    fn name(&self) -> &'static str;
    /// The aggregate types (topics) it consumes.
    fn aggregate_types(&self) -> &'static [&'static str];
    /// Its read-model table; a rebuild fills a copy and swaps it in.
    fn table(&self) -> &'static str;
    /// Applies one event to `table` on `conn` (inside the caller's transaction). Returns
    /// `false` when the event was already applied (a redelivery) and nothing changed.
    async fn apply(
        &self,
        conn: &mut PgConnection,
        table: &str,
        event: &Envelope,
    ) -> Result<bool, ApplyError>;

    /// Applies a rebuild's batch, in order; returns how many events changed something. Poison
    /// events are skipped (the live runner dead-lettered them). Override to write each object
    /// once per batch instead of once per event.
    async fn apply_batch(
        &self,
        conn: &mut PgConnection,
        table: &str,
        events: &[Envelope],
    ) -> Result<u64, ApplyError> {
        let mut applied = 0;
        for event in events {
            match self.apply(conn, table, event).await {
                Ok(true) => applied += 1,
                Ok(false) => {}
                Err(e) if e.is_poison() => {
                    tracing::warn!(event_id = %event.event_id, reason = %e.report(), "rebuild skipped a poison event")
                }
                Err(e) => return Err(e),
            }
        }
        Ok(applied)
    }
}

/// Applies one event and moves the projection's status in one transaction.
pub async fn apply_one(
    pool: &PgPool,
    projection: &dyn Projection,
    event: &Envelope,
) -> Result<bool, ApplyError> {
    let mut tx = pool.begin().await?;
    let applied = projection.apply(&mut tx, projection.table(), event).await?;
    if applied {
        sqlx::query(
            "INSERT INTO projection_status (projection, applied_events, last_position, last_event_id, \
               last_recorded_at, last_applied_at) VALUES ($1, 1, $2, $3, $4, now()) \
             ON CONFLICT (projection) DO UPDATE SET applied_events = projection_status.applied_events + 1, \
               last_position = GREATEST(projection_status.last_position, $2), last_event_id = $3, \
               last_recorded_at = $4, last_applied_at = now()",
        )
        .bind(projection.name())
        .bind(event.position)
        .bind(event.event_id)
        .bind(event.recorded_at)
        .execute(&mut *tx)
        .await?;
    }
    tx.commit().await?;
    Ok(applied)
}

pub struct ProjectionRunner {
    pool: PgPool,
    settings: KafkaSettings,
    projection: Arc<dyn Projection>,
    /// Events handled (applied, skipped or dead-lettered) since start: restarts that made
    /// progress reset the backoff.
    handled: AtomicU64,
}

impl ProjectionRunner {
    pub fn new(pool: PgPool, settings: KafkaSettings, projection: Arc<dyn Projection>) -> Self {
        Self {
            pool,
            settings,
            projection,
            handled: AtomicU64::new(0),
        }
    }

    fn group(&self) -> String {
        format!(
            "{}.{}",
            self.settings.consumer_group,
            self.projection.name()
        )
    }

    /// Runs until stopped, restarting after every failure: the pause grows exponentially (with
    /// jitter, capped at 30 s) while restarts make no progress, and starts over after one did.
    pub async fn run_supervised(self) {
        let mut attempt: u32 = 0;
        loop {
            let before = self.handled.load(Ordering::Relaxed);
            let result = self.run().await;
            if self.handled.load(Ordering::Relaxed) > before {
                attempt = 0;
            }
            attempt = attempt.saturating_add(1);
            let pause = backoff(attempt, Duration::from_secs(30), rand::random::<f64>());
            if let Err(e) = result {
                let report = error_chain(&e);
                tracing::warn!(projection = self.projection.name(), error = %report, attempt,
                    pause_ms = pause.as_millis() as u64, "projection stopped; restarting");
                if let Err(status) = record_error(&self.pool, self.projection.name(), &report).await
                {
                    tracing::warn!(projection = self.projection.name(), error = %status,
                        "could not record the error in the projection status");
                }
            }
            tokio::time::sleep(pause).await;
        }
    }

    /// Consumes until the first error that is not a poison event.
    pub async fn run(&self) -> Result<(), RunnerError> {
        let topics: Vec<String> = self
            .projection
            .aggregate_types()
            .iter()
            .map(|t| self.settings.topic(t))
            .collect();
        let mut all = topics.clone();
        all.push(self.settings.dead_letter_topic());
        ensure_topics(&self.settings, &all).await?;
        let consumer: StreamConsumer = self.settings.consumer_config(&self.group()).create()?;
        let refs: Vec<&str> = topics.iter().map(String::as_str).collect();
        consumer.subscribe(&refs)?;
        let dead_letters: FutureProducer = self.settings.producer_config().create()?;
        sqlx::query(
            "INSERT INTO projection_status (projection) VALUES ($1) ON CONFLICT DO NOTHING",
        )
        .bind(self.projection.name())
        .execute(&self.pool)
        .await?;
        tracing::info!(projection = self.projection.name(), group = %self.group(), "projection consuming");
        loop {
            let message = consumer.recv().await?;
            self.handle(&message, &dead_letters).await?;
            consumer.store_offset_from_message(&message)?;
            self.handled.fetch_add(1, Ordering::Relaxed);
        }
    }

    #[tracing::instrument(skip_all, fields(projection = self.projection.name(), topic = message.topic(),
        partition = message.partition(), offset = message.offset()), err)]
    async fn handle(
        &self,
        message: &BorrowedMessage<'_>,
        dead_letters: &FutureProducer,
    ) -> Result<(), RunnerError> {
        let payload = message.payload().unwrap_or_default();
        let event = match serde_json::from_slice::<Envelope>(payload) {
            Ok(event) => event,
            Err(e) => {
                return self
                    .dead_letter(
                        message,
                        None,
                        &format!("undecodable envelope: {e}"),
                        dead_letters,
                    )
                    .await;
            }
        };
        match apply_one(&self.pool, self.projection.as_ref(), &event).await {
            Ok(applied) => {
                tracing::debug!(aggregate_id = %event.aggregate_id, sequence = event.sequence, applied, "handled");
                Ok(())
            }
            Err(e) if e.is_poison() => {
                self.dead_letter(message, Some(&event), &e.report(), dead_letters)
                    .await
            }
            Err(e) => Err(e.into()),
        }
    }

    async fn dead_letter(
        &self,
        message: &BorrowedMessage<'_>,
        event: Option<&Envelope>,
        error: &str,
        producer: &FutureProducer,
    ) -> Result<(), RunnerError> {
        let payload = String::from_utf8_lossy(message.payload().unwrap_or_default()).to_string();
        let key = message
            .key()
            .map(|k| String::from_utf8_lossy(k).to_string());
        tracing::warn!(projection = self.projection.name(), %error, "dead-lettering an event");
        sqlx::query(
            "INSERT INTO dead_letters (projection, topic, kafka_partition, kafka_offset, message_key, \
               payload, error, event_id, tenant_id) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
        )
        .bind(self.projection.name())
        .bind(message.topic())
        .bind(message.partition())
        .bind(message.offset())
        .bind(&key)
        .bind(&payload)
        .bind(error)
        .bind(event.map(|e| e.event_id))
        .bind(event.map(|e| e.tenant_id.clone()))
        .execute(&self.pool)
        .await?;
        record_error(&self.pool, self.projection.name(), error).await?;
        // The table is the record; the topic lets other tools see the same letters.
        let topic = self.settings.dead_letter_topic();
        let record = FutureRecord::to(&topic)
            .key(key.as_deref().unwrap_or_default())
            .payload(&payload);
        if let Err((e, _)) = producer.send(record, Duration::from_secs(5)).await {
            tracing::warn!(error = %e, "could not publish the dead letter to its topic");
        }
        Ok(())
    }
}

async fn record_error(pool: &PgPool, projection: &str, error: &str) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO projection_status (projection, last_error, last_error_at) VALUES ($1, $2, now()) \
         ON CONFLICT (projection) DO UPDATE SET last_error = $2, last_error_at = now()",
    )
    .bind(projection)
    .bind(error)
    .execute(pool)
    .await?;
    Ok(())
}

/// What a projection has done, and how far behind the event store it is.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ProjectionStatus {
    pub projection: String,
    pub applied_events: i64,
    /// Highest global position applied (events of different aggregates arrive in partition order,
    /// so lower positions may still be on their way while this one is applied).
    pub last_position: i64,
    /// Events of its aggregate types in the store that it has not applied (including dead letters).
    pub lag_events: i64,
    /// When behind: how old the newest applied event is; 0 when caught up.
    pub lag_seconds: f64,
    pub last_applied_at: Option<DateTime<Utc>>,
    pub last_error: Option<String>,
    pub last_error_at: Option<DateTime<Utc>>,
    pub rebuilt_at: Option<DateTime<Utc>>,
    pub open_dead_letters: i64,
}

impl ProjectionStatus {
    pub async fn load(pool: &PgPool, projection: &dyn Projection) -> Result<Self, sqlx::Error> {
        let types: Vec<String> = projection
            .aggregate_types()
            .iter()
            .map(|s| s.to_string())
            .collect();
        let row = sqlx::query(
            "SELECT s.applied_events, s.last_position, s.last_applied_at, s.last_recorded_at, s.last_error, \
               s.last_error_at, s.rebuilt_at, \
               (SELECT count(*) FROM events WHERE aggregate_type = ANY($2)) AS stored, \
               (SELECT count(*) FROM dead_letters d WHERE d.projection = $1 AND d.resolved_at IS NULL) AS open \
             FROM (SELECT $1::text AS projection) p \
             LEFT JOIN projection_status s ON s.projection = p.projection",
        )
        .bind(projection.name())
        .bind(&types)
        .fetch_one(pool)
        .await?;
        let applied: i64 = row
            .try_get::<Option<i64>, _>("applied_events")?
            .unwrap_or(0);
        let stored: i64 = row.get("stored");
        let lag_events = (stored - applied).max(0);
        let last_recorded: Option<DateTime<Utc>> = row.get("last_recorded_at");
        let lag_seconds = match (lag_events, last_recorded) {
            (0, _) => 0.0,
            (_, Some(t)) => (Utc::now() - t).num_milliseconds().max(0) as f64 / 1000.0,
            (_, None) => f64::INFINITY.min(1e9),
        };
        Ok(Self {
            projection: projection.name().to_string(),
            applied_events: applied,
            last_position: row.try_get::<Option<i64>, _>("last_position")?.unwrap_or(0),
            lag_events,
            lag_seconds,
            last_applied_at: row.get("last_applied_at"),
            last_error: row.get("last_error"),
            last_error_at: row.get("last_error_at"),
            rebuilt_at: row.get("rebuilt_at"),
            open_dead_letters: row.get("open"),
        })
    }
}

/// How fresh a read model is, cheap enough for every read: a lookup of the status row and an
/// index range over the events stored after the last applied position (so its cost grows with
/// the lag, not with the history). `lag_events` is a lower bound: events of other partitions
/// below that position may still be on their way; `ProjectionStatus` has the exact count.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Freshness {
    /// Highest event position the read model has applied.
    pub position: i64,
    /// Events of its aggregate types stored after `position`.
    pub lag_events: i64,
    /// Age of the oldest of those events; 0 when there are none.
    pub lag_seconds: f64,
}

impl Freshness {
    pub async fn load(pool: &PgPool, projection: &dyn Projection) -> Result<Self, sqlx::Error> {
        let types: Vec<String> = projection
            .aggregate_types()
            .iter()
            .map(|s| s.to_string())
            .collect();
        let row = sqlx::query(
            "WITH s AS (SELECT coalesce((SELECT last_position FROM projection_status WHERE projection = $1), 0) AS p) \
             SELECT s.p AS position, count(e.position) AS lag, \
               extract(epoch FROM now() - min(e.recorded_at))::float8 AS age \
             FROM s LEFT JOIN events e ON e.position > s.p AND e.aggregate_type = ANY($2) GROUP BY s.p",
        )
        .bind(projection.name())
        .bind(&types)
        .fetch_one(pool)
        .await?;
        Ok(Self {
            position: row.get("position"),
            lag_events: row.get("lag"),
            lag_seconds: row.get::<Option<f64>, _>("age").unwrap_or(0.0).max(0.0),
        })
    }
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct DeadLetter {
    pub id: i64,
    pub projection: String,
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
    pub error: String,
    pub event_id: Option<uuid::Uuid>,
    pub payload: String,
    pub created_at: DateTime<Utc>,
    pub retried_at: Option<DateTime<Utc>>,
    pub resolved_at: Option<DateTime<Utc>>,
}

impl DeadLetter {
    /// Dead letters, newest first. Tenant-scoped when `tenant` is given (undecodable letters
    /// have no tenant and are shown to no tenant).
    pub async fn list(
        pool: &PgPool,
        tenant: &str,
        include_resolved: bool,
    ) -> Result<Vec<Self>, sqlx::Error> {
        let rows = sqlx::query(
            "SELECT id, projection, topic, kafka_partition, kafka_offset, error, event_id, payload, \
               created_at, retried_at, resolved_at FROM dead_letters \
             WHERE tenant_id = $1 AND ($2 OR resolved_at IS NULL) ORDER BY id DESC LIMIT 500",
        )
        .bind(tenant)
        .bind(include_resolved)
        .fetch_all(pool)
        .await?;
        Ok(rows.iter().map(Self::from_row).collect())
    }

    fn from_row(r: &sqlx::postgres::PgRow) -> Self {
        Self {
            id: r.get("id"),
            projection: r.get("projection"),
            topic: r.get("topic"),
            partition: r.get("kafka_partition"),
            offset: r.get("kafka_offset"),
            error: r.get("error"),
            event_id: r.get("event_id"),
            payload: r.get("payload"),
            created_at: r.get("created_at"),
            retried_at: r.get("retried_at"),
            resolved_at: r.get("resolved_at"),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum RetryError {
    #[error("no open dead letter with that id")]
    NotFound,
    #[error("still failing: {0}")]
    StillFailing(String),
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
}

/// Applies a dead letter again (after a fix); marks it resolved when that works.
pub async fn retry_dead_letter(
    pool: &PgPool,
    projections: &[Arc<dyn Projection>],
    tenant: &str,
    id: i64,
) -> Result<DeadLetter, RetryError> {
    let row = sqlx::query("SELECT projection, payload FROM dead_letters WHERE id = $1 AND tenant_id = $2 AND resolved_at IS NULL")
        .bind(id)
        .bind(tenant)
        .fetch_optional(pool)
        .await?
        .ok_or(RetryError::NotFound)?;
    let name: String = row.get("projection");
    let payload: String = row.get("payload");
    let projection = projections
        .iter()
        .find(|p| p.name() == name)
        .ok_or(RetryError::NotFound)?;
    let outcome = match serde_json::from_str::<Envelope>(&payload) {
        Ok(event) => apply_one(pool, projection.as_ref(), &event)
            .await
            .map(|_| ())
            .map_err(|e| e.report()),
        Err(e) => Err(format!("undecodable envelope: {e}")),
    };
    let resolved = outcome.is_ok();
    let row = sqlx::query(
        "UPDATE dead_letters SET retried_at = now(), resolved_at = CASE WHEN $2 THEN now() END, \
           error = COALESCE($3, error) WHERE id = $1 \
         RETURNING id, projection, topic, kafka_partition, kafka_offset, error, event_id, payload, \
           created_at, retried_at, resolved_at",
    )
    .bind(id)
    .bind(resolved)
    .bind(outcome.as_ref().err())
    .fetch_one(pool)
    .await?;
    match outcome {
        Ok(()) => Ok(DeadLetter::from_row(&row)),
        Err(e) => Err(RetryError::StillFailing(e)),
    }
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct RebuildReport {
    pub projection: String,
    /// Events read from the store (all aggregate types).
    pub events_read: u64,
    pub events_applied: u64,
    pub seconds: f64,
}

#[derive(Debug, thiserror::Error)]
pub enum RebuildError {
    #[error("a rebuild of this projection is already running")]
    InProgress,
    #[error("database")]
    Database(#[from] sqlx::Error),
    #[error("applying an event failed")]
    Apply(#[from] ApplyError),
}

const REBUILD_BATCH: i64 = 2000;

/// Rebuilds `projection` from position 0 of the event store into a shadow table, then swaps it
/// in: reads of the live table go on until the swap, which takes one short exclusive lock.
#[tracing::instrument(skip_all, fields(projection = projection.name()), err)]
pub async fn rebuild(
    pool: &PgPool,
    projection: &dyn Projection,
) -> Result<RebuildReport, RebuildError> {
    let started = Instant::now();
    let mut lock = pool.acquire().await?;
    let locked: bool = sqlx::query_scalar("SELECT pg_try_advisory_lock(hashtextextended($1, 0))")
        .bind(format!("answers-rebuild:{}", projection.name()))
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
    }
    let unlocked =
        sqlx::query_scalar::<_, bool>("SELECT pg_advisory_unlock(hashtextextended($1, 0))")
            .bind(format!("answers-rebuild:{}", projection.name()))
            .fetch_one(&mut *lock)
            .await;
    match unlocked {
        Ok(true) => {}
        outcome => {
            // The lock is the session's: closing the connection is the sure way to drop it,
            // instead of handing a locked connection back to the pool.
            tracing::warn!(
                ?outcome,
                "could not release the rebuild lock; closing its connection"
            );
            if let Err(e) = lock.close().await {
                tracing::warn!(error = %e, "closing the rebuild lock's connection failed");
            }
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

async fn rebuild_locked(
    pool: &PgPool,
    projection: &dyn Projection,
) -> Result<(u64, u64), RebuildError> {
    let table = projection.table();
    let shadow = format!("{table}_rebuild");
    sqlx::query(&format!("DROP TABLE IF EXISTS {shadow}"))
        .execute(pool)
        .await?;
    sqlx::query(&format!(
        "CREATE TABLE {shadow} (LIKE {table} INCLUDING ALL)"
    ))
    .execute(pool)
    .await?;
    let mut state = Progress::default();
    // The bulk of the history, without blocking anyone.
    for batch in 1.. {
        let mut tx = pool.begin().await?;
        let more = replay_batch(&mut tx, projection, &shadow, &mut state).await?;
        tx.commit().await?;
        if !more {
            break;
        }
        // The shadow starts empty: without fresh statistics the lookups a projection makes in
        // it keep a plan made for an empty table (a sequential scan), and the rebuild slows
        // down quadratically as the table fills.
        if batch == 1 || batch % 25 == 0 {
            sqlx::query(&format!("ANALYZE {shadow}"))
                .execute(pool)
                .await?;
        }
    }
    // The swap: block the live table, catch up what arrived meanwhile, rename.
    let mut tx = pool.begin().await?;
    sqlx::query(&format!("LOCK TABLE {table} IN ACCESS EXCLUSIVE MODE"))
        .execute(&mut *tx)
        .await?;
    while replay_batch(&mut tx, projection, &shadow, &mut state).await? {}
    sqlx::query(&format!("ALTER TABLE {table} RENAME TO {table}_old"))
        .execute(&mut *tx)
        .await?;
    sqlx::query(&format!("ALTER TABLE {shadow} RENAME TO {table}"))
        .execute(&mut *tx)
        .await?;
    sqlx::query(&format!("DROP TABLE {table}_old"))
        .execute(&mut *tx)
        .await?;
    sqlx::query(
        "INSERT INTO projection_status (projection, applied_events, last_position, rebuilt_at) \
         VALUES ($1, $2, $3, now()) ON CONFLICT (projection) DO UPDATE SET applied_events = $2, \
           last_position = $3, rebuilt_at = now(), last_error = NULL, last_error_at = NULL",
    )
    .bind(projection.name())
    .bind(state.applied as i64)
    .bind(state.checkpoint.position)
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok((state.read, state.applied))
}

#[derive(Default)]
struct Progress {
    checkpoint: Checkpoint,
    read: u64,
    applied: u64,
}

/// Applies the next batch of stored events to `table`; false when there was nothing left.
async fn replay_batch(
    conn: &mut PgConnection,
    projection: &dyn Projection,
    table: &str,
    state: &mut Progress,
) -> Result<bool, RebuildError> {
    let batch = read_batch(&mut *conn, state.checkpoint, REBUILD_BATCH).await?;
    let Some(last) = batch.last() else {
        return Ok(false);
    };
    state.checkpoint = last.checkpoint();
    state.read += batch.len() as u64;
    let mine: Vec<Envelope> = batch
        .iter()
        .filter(|e| {
            projection
                .aggregate_types()
                .contains(&e.aggregate_type.as_str())
        })
        .map(Envelope::from)
        .collect();
    state.applied += projection.apply_batch(&mut *conn, table, &mine).await?;
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn constraint_and_data_errors_are_the_events_fault_the_rest_may_pass() {
        assert!(sqlstate_is_permanent("23505")); // unique violation
        assert!(sqlstate_is_permanent("23514")); // check violation
        assert!(sqlstate_is_permanent("22P02")); // invalid text representation
        assert!(!sqlstate_is_permanent("40001")); // serialisation failure
        assert!(!sqlstate_is_permanent("40P01")); // deadlock
        assert!(!sqlstate_is_permanent("08006")); // connection failure
        assert!(!sqlstate_is_permanent("57P01")); // admin shutdown
        assert!(!ApplyError::from(sqlx::Error::PoolTimedOut).is_poison());
        assert!(ApplyError::Poison("x".into()).is_poison());
    }

    #[test]
    fn the_backoff_grows_exponentially_up_to_its_cap_with_jitter() {
        let cap = Duration::from_secs(30);
        assert_eq!(backoff(1, cap, 1.0), Duration::from_millis(200));
        assert_eq!(backoff(2, cap, 1.0), Duration::from_millis(400));
        assert_eq!(backoff(5, cap, 1.0), Duration::from_millis(3200));
        assert_eq!(backoff(10, cap, 1.0), cap);
        assert_eq!(backoff(u32::MAX, cap, 1.0), cap);
        assert_eq!(backoff(10, cap, 0.0), cap / 2);
        let jittered = backoff(4, cap, 0.3);
        assert!(jittered >= Duration::from_millis(800) && jittered < Duration::from_millis(1600));
    }
}
