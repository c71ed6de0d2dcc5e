//! The relay: event store → Kafka, at least once, in commit-safe order.
//!
//! One relay (per `relay.name`) publishes at a time: it holds a Postgres advisory lock on a
//! dedicated connection and does all its reading and checkpointing on that connection, so losing
//! the connection loses the lock and stops the relay at once. The checkpoint moves only after
//! the broker acknowledged every event of the batch; a crash in between republishes the batch
//! (consumers de-duplicate by aggregate sequence).
use std::time::Duration;

use event_store::{read_batch, Checkpoint, StoredEvent};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{DeliveryFuture, FutureProducer, FutureRecord};
use serde::Serialize;
use sqlx::{Connection, PgConnection, PgPool};

use crate::{envelope, Envelope, KafkaSettings};

#[derive(Debug, thiserror::Error)]
pub enum RelayError {
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
    #[error("kafka: {0}")]
    Kafka(#[from] KafkaError),
    #[error("the relay lost its lock")]
    LostLock,
    #[error("an event cannot be encoded for the broker")]
    Encode(#[from] serde_json::Error),
    /// The stored checkpoint cannot be read. Starting over from 0 instead would republish the
    /// whole store, so the relay stops until an operator repairs the row.
    #[error("relay `{relay}`: the stored checkpoint transaction id `{value}` is unreadable")]
    UnreadableCheckpoint {
        relay: String,
        value: String,
        #[source]
        source: std::num::ParseIntError,
    },
}

impl RelayError {
    /// Errors that retrying cannot mend: the relay stops instead of looping on them.
    pub fn is_fatal(&self) -> bool {
        matches!(self, RelayError::UnreadableCheckpoint { .. })
    }

    /// The metric label of the error's kind.
    pub fn kind(&self) -> &'static str {
        match self {
            RelayError::Database(_) => "database",
            RelayError::Kafka(_) => "producer",
            RelayError::LostLock => "lock_lost",
            RelayError::Encode(_) => "encode",
            RelayError::UnreadableCheckpoint { .. } => "unreadable_checkpoint",
        }
    }
}

/// Where the relay stands, for the status API.
#[derive(Debug, Clone, Serialize)]
pub struct RelayStatus {
    pub name: String,
    pub position: i64,
    pub published: i64,
    /// Committed events not yet published.
    pub lag_events: i64,
    /// How long the oldest of them has waited, seconds (`None` when none waits).
    pub lag_seconds: Option<f64>,
    pub updated_at: chrono::DateTime<chrono::Utc>,
}

pub struct Relay {
    pool: PgPool,
    producer: FutureProducer,
    settings: KafkaSettings,
    metrics: RelayMetrics,
}

/// What this relay process counts (docs/metrics.md); the service registers them when the
/// relay runs inside it.
#[derive(Clone)]
struct RelayMetrics {
    published: prometheus::IntCounterVec,
    errors: prometheus::IntCounterVec,
}

impl RelayMetrics {
    fn new() -> Result<Self, prometheus::Error> {
        Ok(Self {
            published: prometheus::IntCounterVec::new(
                prometheus::Opts::new(
                    "answers_relay_events_published_total",
                    "Events this process's relay published to Kafka (acknowledged), by relay",
                ),
                &["relay"],
            )?,
            errors: prometheus::IntCounterVec::new(
                prometheus::Opts::new(
                    "answers_relay_errors_total",
                    "Relay rounds that failed, by relay and kind (`producer`: Kafka refused or lost a message; `database`; `lock_lost`; ...)",
                ),
                &["relay", "kind"],
            )?,
        })
    }
}

impl Relay {
    pub fn new(pool: PgPool, settings: KafkaSettings) -> Result<Self, KafkaError> {
        Ok(Self {
            producer: settings.producer_config().create()?,
            pool,
            settings,
            metrics: RelayMetrics::new()
                .map_err(|e| KafkaError::ClientCreation(format!("the relay's metrics: {e}")))?,
        })
    }

    /// The relay's own metrics, to register with the service's registry.
    pub fn collectors(&self) -> Vec<Box<dyn prometheus::core::Collector>> {
        vec![
            Box::new(self.metrics.published.clone()),
            Box::new(self.metrics.errors.clone()),
        ]
    }

    /// Publishes until a fatal error or a stop: takes the lock when it can, relays, and starts
    /// over after any error that may pass (database or broker away, lock lost). A fatal error (an
    /// unreadable checkpoint) is returned: retrying it would never succeed. Asked to stop, it
    /// finishes the batch in hand (published and checkpointed), lets the lock go at once (a
    /// standby takes over without waiting for a dead connection) and returns `Ok`.
    pub async fn run(self, shutdown: shutdown::Shutdown) -> Result<(), RelayError> {
        loop {
            let result = self.lead(&shutdown).await;
            if let Err(e) = &result {
                self.metrics
                    .errors
                    .with_label_values(&[&self.settings.relay.name, e.kind()])
                    .inc();
            }
            match result {
                Err(e) if e.is_fatal() => {
                    tracing::error!(error = %e, "relay stopped");
                    return Err(e);
                }
                Err(e) => tracing::warn!(error = %e, "relay interrupted; retrying"),
                Ok(()) => {}
            }
            if shutdown.is_stopping() {
                tracing::info!(relay = %self.settings.relay.name, "relay stopped");
                return Ok(());
            }
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                _ = shutdown.stopping() => {}
            }
        }
    }

    /// Waits for the lock, then relays until an error or a stop.
    async fn lead(&self, shutdown: &shutdown::Shutdown) -> Result<(), RelayError> {
        let mut conn = self.pool.acquire().await?.detach();
        loop {
            let locked: bool =
                sqlx::query_scalar("SELECT pg_try_advisory_lock(hashtextextended($1, 0))")
                    .bind(self.lock_name())
                    .fetch_one(&mut conn)
                    .await?;
            if locked {
                break;
            }
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_millis(500)) => {}
                _ = shutdown.stopping() => return Ok(()),
            }
        }
        tracing::info!(relay = %self.settings.relay.name, "relay holds the lock");
        let idle = Duration::from_millis(self.settings.relay.idle_ms);
        while !shutdown.is_stopping() {
            if self.step(&mut conn, true).await? == 0 {
                tokio::select! {
                    _ = tokio::time::sleep(idle) => {}
                    _ = shutdown.stopping() => {}
                }
            }
        }
        // Closing the session releases the lock now rather than when the server notices.
        conn.close().await?;
        Ok(())
    }

    fn lock_name(&self) -> String {
        format!("answers-relay:{}", self.settings.relay.name)
    }

    /// Takes the lock on a fresh connection and publishes one batch. With `checkpoint = false` it
    /// stops between publishing and checkpointing, as a crash there would: the next relay
    /// publishes the same batch again. Returns how many events were published, or `None` when
    /// another relay holds the lock.
    pub async fn step_once(&self, checkpoint: bool) -> Result<Option<usize>, RelayError> {
        let mut conn = self.pool.acquire().await?.detach();
        let locked: bool =
            sqlx::query_scalar("SELECT pg_try_advisory_lock(hashtextextended($1, 0))")
                .bind(self.lock_name())
                .fetch_one(&mut conn)
                .await?;
        if !locked {
            return Ok(None);
        }
        let published = self.step(&mut conn, checkpoint).await;
        conn.close().await?;
        published.map(Some)
    }

    #[tracing::instrument(skip_all, fields(relay = %self.settings.relay.name), err)]
    async fn step(&self, conn: &mut PgConnection, checkpoint: bool) -> Result<usize, RelayError> {
        let from = self.checkpoint(conn).await?;
        let batch = read_batch(&mut *conn, from, self.settings.relay.batch_size).await?;
        if batch.is_empty() {
            return Ok(0);
        }
        self.publish(&batch).await?;
        self.metrics
            .published
            .with_label_values(&[&self.settings.relay.name])
            .inc_by(batch.len() as u64);
        if checkpoint {
            let last = batch.last().map(StoredEvent::checkpoint).unwrap_or(from);
            let moved = sqlx::query!(
                "UPDATE relay_checkpoints SET transaction_id = $2::text::xid8, position = $3,
                   published = published + $4, updated_at = now()
                 WHERE relay_name = $1 AND (transaction_id, position) = ($5::text::xid8, $6)",
                self.settings.relay.name,
                last.transaction_id.to_string(),
                last.position,
                batch.len() as i64,
                from.transaction_id.to_string(),
                from.position,
            )
            .execute(&mut *conn)
            .await?;
            if moved.rows_affected() != 1 {
                // Someone moved the checkpoint under us: we are not the relay we thought we were.
                return Err(RelayError::LostLock);
            }
        }
        tracing::debug!(events = batch.len(), "published");
        Ok(batch.len())
    }

    async fn checkpoint(&self, conn: &mut PgConnection) -> Result<Checkpoint, RelayError> {
        sqlx::query!(
            "INSERT INTO relay_checkpoints (relay_name) VALUES ($1) ON CONFLICT DO NOTHING",
            self.settings.relay.name,
        )
        .execute(&mut *conn)
        .await?;
        let row = sqlx::query!(
            r#"SELECT transaction_id::text AS "tx!", position FROM relay_checkpoints
               WHERE relay_name = $1"#,
            self.settings.relay.name,
        )
        .fetch_one(&mut *conn)
        .await?;
        let (tx, position) = (row.tx, row.position);
        let transaction_id = tx
            .parse()
            .map_err(|source| RelayError::UnreadableCheckpoint {
                relay: self.settings.relay.name.clone(),
                value: tx.clone(),
                source,
            })?;
        Ok(Checkpoint {
            transaction_id,
            position,
        })
    }

    /// Enqueues the batch in order (the idempotent producer keeps that order per partition) and
    /// waits for every acknowledgement.
    async fn publish(&self, batch: &[StoredEvent]) -> Result<(), RelayError> {
        let mut deliveries: Vec<DeliveryFuture> = Vec::with_capacity(batch.len());
        // One span per event, in the trace of the request that appended it; it ends when the
        // batch is acknowledged.
        let mut spans = Vec::with_capacity(batch.len());
        for event in batch {
            let envelope = Envelope::from(event);
            let span = tracing::info_span!(
                "relay.publish",
                event_type = %event.event_type,
                aggregate_type = %event.aggregate_type,
                tenant = %envelope.tenant_id,
                position = event.position,
            );
            trace_context::continue_from(&span, envelope.metadata.traceparent.as_deref());
            let trace = trace_context::of(&span);
            spans.push(span);
            let value = serde_json::to_vec(&envelope)?;
            let topic = self.settings.topic(&event.aggregate_type);
            let mut record = FutureRecord::to(&topic)
                .key(event.aggregate_id.as_bytes())
                .payload(&value)
                .headers(envelope::headers(&envelope, trace));
            loop {
                match self.producer.send_result(record) {
                    Ok(delivery) => {
                        deliveries.push(delivery);
                        break;
                    }
                    Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), r)) => {
                        record = r;
                        self.producer.poll(Duration::from_millis(10));
                        tokio::time::sleep(Duration::from_millis(5)).await;
                    }
                    Err((e, _)) => return Err(e.into()),
                }
            }
        }
        for delivery in deliveries {
            match delivery.await {
                Ok(Ok(_)) => {}
                Ok(Err((e, _))) => return Err(e.into()),
                Err(_) => return Err(KafkaError::Canceled.into()),
            }
        }
        Ok(())
    }

    pub async fn status(pool: &PgPool, name: &str) -> Result<Option<RelayStatus>, sqlx::Error> {
        sqlx::query_as!(
            RelayStatus,
            r#"SELECT c.relay_name AS name, c.position, c.published, c.updated_at,
                 (SELECT count(*) FROM events e
                   WHERE (e.transaction_id, e.position) > (c.transaction_id, c.position)) AS "lag_events!",
                 (SELECT extract(epoch FROM now() - min(e.recorded_at))::float8 FROM events e
                   WHERE (e.transaction_id, e.position) > (c.transaction_id, c.position)) AS lag_seconds
               FROM relay_checkpoints c WHERE c.relay_name = $1"#,
            name,
        )
        .fetch_optional(pool)
        .await
    }
}
