//! Where a runner's events come from. The runtime knows only this trait: the Kafka consumer
//! (`streaming::KafkaSource`) is one source; the event store read in commit-safe order is
//! another, a batch at a time for rebuilds ([`StoreSource`]) or followed as it grows by a runner
//! with no broker at all ([`StoreFollower`], what a broker-less mode builds on).
use async_trait::async_trait;
use domain::AggregateType;
use event_store::{read_batch, Checkpoint, Envelope};
use sqlx::PgConnection;

/// An event as delivered, not yet acknowledged.
#[derive(Debug, Clone)]
pub struct Delivery {
    /// The serialised envelope, as delivered (a dead letter keeps it as it came).
    pub payload: Vec<u8>,
    /// The message key (the aggregate id), if any.
    pub key: Option<String>,
    /// Where it came from: topic/partition/offset for Kafka, `store`/0/position for the store.
    pub origin: Origin,
    /// The W3C trace context it carries (a Kafka header, or the stored event's metadata):
    /// applying it continues the trace of the request that caused it.
    pub traceparent: Option<String>,
}

/// Where a delivery came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origin {
    /// A topic, or `store`.
    pub channel: String,
    /// The partition (0 for the store).
    pub partition: i32,
    /// The offset (the position for the store).
    pub offset: i64,
}

/// Why a source failed; the runner restarts it with a backoff.
pub type SourceError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Where a runner's events come from.
#[async_trait]
pub trait EventSource: Send + Sync {
    /// Connects and subscribes; called at the start of every run (after a restart, too).
    async fn open(&mut self) -> Result<(), SourceError>;
    /// Waits for the next event.
    async fn next(&mut self) -> Result<Delivery, SourceError>;
    /// The delivery is handled (applied, skipped or dead-lettered): it is not delivered again.
    async fn ack(&mut self, delivery: &Delivery) -> Result<(), SourceError>;
    /// Lets go of connections after a failed run (the next run opens anew).
    async fn close(&mut self) {}
    /// Also publishes a dead letter where other tools see it (Kafka: the dead-letter topic).
    /// The dead-letter table is the record; this is best effort.
    async fn publish_dead_letter(&self, _delivery: &Delivery) {}
    /// Whether events wait in what this source consumes, if it can tell; `None` lets the
    /// runner judge a stall by the projection's whole lag. A consumer that shares a projection
    /// with others (Kafka: partitions shared between processes) sees only its own share: with
    /// its partitions caught up, another member's backlog is not its stall.
    async fn waiting(&self) -> Result<Option<bool>, SourceError> {
        Ok(None)
    }
    /// Moves a checkpoint the source keeps in the database past `delivery`, in `conn`: the
    /// transaction that applies it (the store follower's position; Kafka's partition offsets).
    async fn checkpoint_in(
        &self,
        _conn: &mut PgConnection,
        _delivery: &Delivery,
    ) -> Result<(), SourceError> {
        Ok(())
    }
}

/// The event store from a checkpoint on, in commit-safe order, for the given aggregate types.
/// Rebuilds read it a batch at a time on their own connection.
pub struct StoreSource {
    types: &'static [AggregateType],
    checkpoint: Checkpoint,
    batch_size: i64,
    /// Events read, of every type.
    pub read: u64,
}

impl StoreSource {
    /// The store from its start, for `types`, `batch_size` events at a time.
    pub fn new(types: &'static [AggregateType], batch_size: i64) -> Self {
        Self {
            types,
            checkpoint: Checkpoint::START,
            batch_size,
            read: 0,
        }
    }

    /// The same source, reading after `checkpoint` instead of from the start.
    pub fn after(mut self, checkpoint: Checkpoint) -> Self {
        self.checkpoint = checkpoint;
        self
    }

    /// The highest position read so far.
    pub fn position(&self) -> i64 {
        self.checkpoint.position
    }

    /// The next batch of this source's events; `None` when the store has nothing more now.
    pub async fn next_batch(
        &mut self,
        conn: &mut PgConnection,
    ) -> Result<Option<Vec<Envelope>>, sqlx::Error> {
        let batch = read_batch(&mut *conn, self.checkpoint, self.batch_size).await?;
        let Some(last) = batch.last() else {
            return Ok(None);
        };
        self.checkpoint = last.checkpoint();
        self.read += batch.len() as u64;
        Ok(Some(
            batch
                .iter()
                .filter(|e| {
                    self.types
                        .iter()
                        .any(|t| t.as_str() == e.aggregate_type.as_str())
                })
                .map(Envelope::from)
                .collect(),
        ))
    }
}

/// The event store followed as it grows, as an [`EventSource`] for a runner: commit-safe order,
/// polling every `idle` when caught up, no broker. It resumes after the last acknowledged event
/// when a run fails; where a new follower starts is its caller's (a broker-less mode keeps that
/// checkpoint with the projection's status).
pub struct StoreFollower {
    pool: sqlx::PgPool,
    reader: StoreSource,
    idle: std::time::Duration,
    buffer: std::collections::VecDeque<(Checkpoint, Delivery)>,
    in_flight: Option<Checkpoint>,
    acked: Checkpoint,
    /// The projection whose status row keeps the checkpoint (the embedded transport), if any.
    persisted: Option<&'static str>,
}

impl StoreFollower {
    /// Follows the store after `from` for `types`, `batch_size` events a read.
    pub fn new(
        pool: sqlx::PgPool,
        types: &'static [AggregateType],
        batch_size: i64,
        from: Checkpoint,
        idle: std::time::Duration,
    ) -> Self {
        Self {
            pool,
            reader: StoreSource::new(types, batch_size).after(from),
            idle,
            buffer: Default::default(),
            in_flight: None,
            acked: from,
            persisted: None,
        }
    }

    /// The embedded transport's follower of `projection`: it starts after the checkpoint kept
    /// in the projection's status (the store's start the first time) and moves it in the
    /// transaction that applies each event.
    pub fn for_projection(
        pool: sqlx::PgPool,
        projection: &dyn crate::Projection,
        batch_size: i64,
        idle: std::time::Duration,
    ) -> Self {
        let mut follower = Self::new(
            pool,
            projection.aggregate_types(),
            batch_size,
            Checkpoint::START,
            idle,
        );
        follower.persisted = Some(projection.name());
        follower
    }
}

/// The checkpoint the embedded transport keeps for `projection` (the store's start if none).
pub async fn stored_checkpoint(
    pool: &sqlx::PgPool,
    projection: &str,
) -> Result<Checkpoint, SourceError> {
    let row: Option<(Option<String>, Option<i64>)> = sqlx::query_as(
        "SELECT store_transaction_id::text, store_position FROM projection_status
          WHERE projection = $1",
    )
    .bind(projection)
    .fetch_optional(pool)
    .await?;
    match row {
        Some((Some(transaction_id), Some(position))) => Ok(Checkpoint {
            transaction_id: transaction_id.parse().map_err(|e| {
                format!("projection `{projection}`: unreadable store checkpoint `{transaction_id}`: {e}")
            })?,
            position,
        }),
        _ => Ok(Checkpoint::START),
    }
}

#[async_trait]
impl EventSource for StoreFollower {
    async fn open(&mut self) -> Result<(), SourceError> {
        if let Some(projection) = self.persisted {
            // Where the last committed apply left it: a restarted process resumes there.
            let from = stored_checkpoint(&self.pool, projection).await?;
            self.buffer.clear();
            self.in_flight = None;
            self.acked = from;
            self.reader.checkpoint = from;
        }
        Ok(())
    }

    async fn checkpoint_in(
        &self,
        conn: &mut PgConnection,
        _delivery: &Delivery,
    ) -> Result<(), SourceError> {
        let (Some(projection), Some(checkpoint)) = (self.persisted, self.in_flight) else {
            return Ok(());
        };
        sqlx::query(
            "INSERT INTO projection_status (projection, store_transaction_id, store_position)
             VALUES ($1, $2::text::xid8, $3)
             ON CONFLICT (projection) DO UPDATE
                SET store_transaction_id = excluded.store_transaction_id,
                    store_position = excluded.store_position",
        )
        .bind(projection)
        .bind(checkpoint.transaction_id.to_string())
        .bind(checkpoint.position)
        .execute(conn)
        .await?;
        Ok(())
    }

    async fn next(&mut self) -> Result<Delivery, SourceError> {
        loop {
            if let Some((checkpoint, delivery)) = self.buffer.pop_front() {
                self.in_flight = Some(checkpoint);
                return Ok(delivery);
            }
            let mut conn = self.pool.acquire().await?;
            match self.reader.next_batch(&mut conn).await? {
                None => {
                    drop(conn);
                    tokio::time::sleep(self.idle).await;
                }
                Some(envelopes) => {
                    for envelope in envelopes {
                        let checkpoint = Checkpoint {
                            transaction_id: envelope.transaction_id,
                            position: envelope.position,
                        };
                        let delivery = Delivery {
                            traceparent: envelope.metadata.traceparent.clone(),
                            payload: serde_json::to_vec(&envelope)?,
                            key: Some(envelope.aggregate_id.clone()),
                            origin: Origin {
                                channel: "store".into(),
                                partition: 0,
                                offset: envelope.position,
                            },
                        };
                        self.buffer.push_back((checkpoint, delivery));
                    }
                }
            }
        }
    }

    async fn ack(&mut self, _delivery: &Delivery) -> Result<(), SourceError> {
        if let Some(checkpoint) = self.in_flight.take() {
            self.acked = checkpoint;
        }
        Ok(())
    }

    /// After a failed run: forget what was read past the last acknowledged event.
    async fn close(&mut self) {
        self.buffer.clear();
        self.in_flight = None;
        self.reader.checkpoint = self.acked;
    }
}
