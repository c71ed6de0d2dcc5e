//! Kafka as an event source for the projection runtime. The partitions of a projection's topics
//! are shared among its consumers through PostgreSQL (`partition_owners`), not Kafka's group
//! protocol, and each partition's offset is moved in the transaction that applies its message
//! (docs/streaming.md, "Partition ownership"). Dead letters are also published to the
//! dead-letter topic.
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use projections::{Delivery, EventSource, Origin, SourceError};
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::Message;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{Offset, TopicPartitionList};
use sqlx::{PgConnection, PgPool};

use crate::partition_owners::{advance_offset, stored_offset, PartitionOwners, TopicPartition};
use crate::{ensure_topics, KafkaSettings};

/// How often a consumer looks again at who is alive and which partitions are its own: the
/// bound on how long a dead member's partitions wait for another member.
const REBALANCE_EVERY: Duration = Duration::from_secs(1);

pub struct KafkaSource {
    settings: KafkaSettings,
    pool: PgPool,
    group: String,
    topics: Vec<String>,
    consumer: Option<Arc<StreamConsumer>>,
    dead_letters: Option<FutureProducer>,
    owners: Option<PartitionOwners>,
    /// Every partition of the topics (read when the source opens).
    partitions: Vec<TopicPartition>,
    /// The partitions assigned to the consumer, with the next offset to read in each.
    assigned: BTreeMap<TopicPartition, Offset>,
    next_rebalance: Instant,
}

impl KafkaSource {
    /// The source of `projection`: its consumer group, on the topics of `aggregate_types`.
    pub fn new(
        settings: KafkaSettings,
        pool: PgPool,
        projection: &str,
        aggregate_types: &[domain::AggregateType],
    ) -> Self {
        Self {
            group: format!("{}.{projection}", settings.consumer_group),
            topics: aggregate_types
                .iter()
                .map(|t| settings.topic(t.as_str()))
                .collect(),
            settings,
            pool,
            consumer: None,
            dead_letters: None,
            owners: None,
            partitions: Vec::new(),
            assigned: BTreeMap::new(),
            next_rebalance: Instant::now(),
        }
    }

    /// The source of a projection, as the runtime runs it.
    pub fn for_projection(
        settings: KafkaSettings,
        pool: PgPool,
        projection: &dyn projections::Projection,
    ) -> Self {
        Self::new(
            settings,
            pool,
            projection.name(),
            projection.aggregate_types(),
        )
    }

    /// Lets go of the consumer without blocking the async runtime (librdkafka's close can wait
    /// for a broker that is gone).
    fn release_consumer(&mut self) {
        if let Some(consumer) = self.consumer.take() {
            std::thread::spawn(move || drop(consumer));
        }
    }

    /// Lets go of the consumer and of the partitions.
    async fn release(&mut self) {
        self.release_consumer();
        if let Some(owners) = self.owners.take() {
            owners.leave().await;
        }
        self.assigned.clear();
    }

    fn consumer(&self) -> Result<Arc<StreamConsumer>, SourceError> {
        self.consumer
            .clone()
            .ok_or_else(|| "the Kafka source is not open".into())
    }

    /// Every partition of this source's topics, as the brokers know them.
    async fn discover_partitions(&self) -> Result<Vec<TopicPartition>, SourceError> {
        let consumer = self.consumer()?;
        let topics = self.topics.clone();
        let found = tokio::task::spawn_blocking(move || {
            let mut found = Vec::new();
            for topic in &topics {
                let metadata = consumer.fetch_metadata(Some(topic), Duration::from_secs(10))?;
                for t in metadata.topics() {
                    found.extend(t.partitions().iter().map(|p| TopicPartition {
                        topic: t.name().to_string(),
                        partition: p.id(),
                    }));
                }
            }
            Ok::<_, rdkafka::error::KafkaError>(found)
        })
        .await??;
        if found.is_empty() {
            return Err(format!("no partitions found for {:?}", self.topics).into());
        }
        Ok(found)
    }

    /// Decides again which partitions are this consumer's and reassigns the consumer when that
    /// changed: a partition it kept goes on from the next offset after the last acknowledged
    /// message, a new one from its stored offset.
    async fn rebalance(&mut self) -> Result<(), SourceError> {
        self.next_rebalance = Instant::now() + REBALANCE_EVERY;
        let owners = self.owners.as_mut().ok_or("the Kafka source is not open")?;
        let ownership = owners.rebalance(&self.partitions).await?;
        if ownership.owned.iter().eq(self.assigned.keys()) {
            return Ok(());
        }
        let mut next = BTreeMap::new();
        for partition in ownership.owned {
            let offset = match self.assigned.get(&partition) {
                Some(offset) => *offset,
                None => match stored_offset(&self.pool, &self.group, &partition).await? {
                    Some(offset) => Offset::Offset(offset),
                    None => Offset::Beginning,
                },
            };
            next.insert(partition, offset);
        }
        let mut list = TopicPartitionList::new();
        for (partition, offset) in &next {
            list.add_partition_offset(&partition.topic, partition.partition, *offset)?;
        }
        self.consumer()?.assign(&list)?;
        tracing::info!(group = %self.group, members = ownership.members,
            partitions = ?next.keys().map(|p| format!("{}/{}", p.topic, p.partition)).collect::<Vec<_>>(),
            "consumer assigned");
        self.assigned = next;
        Ok(())
    }
}

#[async_trait]
impl EventSource for KafkaSource {
    async fn open(&mut self) -> Result<(), SourceError> {
        let mut all = self.topics.clone();
        all.push(self.settings.dead_letter_topic());
        ensure_topics(&self.settings, &all).await?;
        // A fresh consumer and membership per run: after an error everything starts anew.
        self.release().await;
        let consumer: StreamConsumer = self.settings.consumer_config(&self.group).create()?;
        self.consumer = Some(Arc::new(consumer));
        self.partitions = self.discover_partitions().await?;
        self.owners = Some(PartitionOwners::join(&self.pool, &self.group).await?);
        self.rebalance().await?;
        self.dead_letters = Some(self.settings.producer_config().create()?);
        tracing::info!(group = %self.group, "kafka source open");
        Ok(())
    }

    async fn next(&mut self) -> Result<Delivery, SourceError> {
        loop {
            if Instant::now() >= self.next_rebalance {
                self.rebalance().await?;
            }
            let consumer = self.consumer()?;
            let wait = self
                .next_rebalance
                .saturating_duration_since(Instant::now());
            let delivery = tokio::select! {
                message = consumer.recv() => {
                    let message = message?;
                    let owned = self.assigned.keys().any(|p| {
                        p.partition == message.partition() && p.topic == message.topic()
                    });
                    if !owned {
                        continue; // fetched before a partition was given up
                    }
                    to_delivery(&message)
                }
                _ = tokio::time::sleep(wait) => continue,
            };
            return Ok(delivery);
        }
    }

    /// Messages wait in a partition this consumer owns (its high watermark is past the next
    /// offset to read), or a partition of the topics is owned by nobody at all.
    async fn waiting(&self) -> Result<Option<bool>, SourceError> {
        let holders =
            crate::partition_owners::partition_holders(&self.pool, &self.group, &self.partitions)
                .await?;
        if holders.len() < self.partitions.len() {
            return Ok(Some(true));
        }
        let consumer = self.consumer()?;
        let assigned: Vec<(TopicPartition, Offset)> =
            self.assigned.iter().map(|(p, o)| (p.clone(), *o)).collect();
        let waiting = tokio::task::spawn_blocking(move || {
            for (partition, next) in assigned {
                let (low, high) = consumer.fetch_watermarks(
                    &partition.topic,
                    partition.partition,
                    Duration::from_secs(5),
                )?;
                let next = match next {
                    Offset::Offset(n) => n,
                    _ => low,
                };
                if high > next {
                    return Ok(true);
                }
            }
            Ok::<_, rdkafka::error::KafkaError>(false)
        })
        .await??;
        Ok(Some(waiting))
    }

    async fn checkpoint_in(
        &self,
        conn: &mut PgConnection,
        delivery: &Delivery,
    ) -> Result<(), SourceError> {
        let o = &delivery.origin;
        if !advance_offset(conn, &self.group, &partition_of(o), o.offset).await? {
            return Err(format!(
                "{}/{} offset {}: another consumer of `{}` is already past it (this one lost the partition)",
                o.channel, o.partition, o.offset, self.group
            )
            .into());
        }
        Ok(())
    }

    async fn ack(&mut self, delivery: &Delivery) -> Result<(), SourceError> {
        let o = &delivery.origin;
        if let Some(next) = self.assigned.get_mut(&partition_of(o)) {
            *next = Offset::Offset(o.offset + 1);
        }
        Ok(())
    }

    async fn close(&mut self) {
        self.release().await;
    }

    async fn publish_dead_letter(&self, delivery: &Delivery) {
        let Some(producer) = &self.dead_letters else {
            return;
        };
        let topic = self.settings.dead_letter_topic();
        let record = FutureRecord::to(&topic)
            .key(delivery.key.as_deref().unwrap_or_default())
            .payload(&delivery.payload);
        if let Err((e, _)) = producer.send(record, Duration::from_secs(5)).await {
            tracing::warn!(error = %e, "could not publish the dead letter to its topic");
        }
    }
}

impl Drop for KafkaSource {
    fn drop(&mut self) {
        self.release_consumer();
        // The ownership connection closes when dropped, and its claims with it.
    }
}

/// The partition a delivery came from.
fn partition_of(origin: &Origin) -> TopicPartition {
    TopicPartition {
        topic: origin.channel.clone(),
        partition: origin.partition,
    }
}

fn to_delivery(message: &rdkafka::message::BorrowedMessage<'_>) -> Delivery {
    let traceparent = message.headers().and_then(|headers| {
        use rdkafka::message::Headers;
        headers
            .iter()
            .find(|h| h.key == "traceparent")
            .and_then(|h| h.value)
            .and_then(|v| std::str::from_utf8(v).ok())
            .map(str::to_string)
    });
    Delivery {
        traceparent,
        payload: message.payload().unwrap_or_default().to_vec(),
        key: message
            .key()
            .map(|k| String::from_utf8_lossy(k).to_string()),
        origin: Origin {
            channel: message.topic().to_string(),
            partition: message.partition(),
            offset: message.offset(),
        },
    }
}
