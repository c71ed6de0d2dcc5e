//! Kafka as an event source for the projection runtime: one consumer group per projection,
//! offsets stored only once the runtime acknowledged an event, dead letters also published to
//! the dead-letter topic.
use std::time::Duration;

use async_trait::async_trait;
use projections::{Delivery, EventSource, Origin, SourceError};
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::Message;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::Offset;

use crate::{ensure_topics, KafkaSettings};

pub struct KafkaSource {
    settings: KafkaSettings,
    group: String,
    topics: Vec<String>,
    consumer: Option<StreamConsumer>,
    dead_letters: Option<FutureProducer>,
}

impl KafkaSource {
    /// The source of `projection`: its consumer group, on the topics of `aggregate_types`.
    pub fn new(
        settings: KafkaSettings,
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
            consumer: None,
            dead_letters: None,
        }
    }

    /// The source of a projection, as the runtime runs it.
    pub fn for_projection(
        settings: KafkaSettings,
        projection: &dyn projections::Projection,
    ) -> Self {
        Self::new(settings, projection.name(), projection.aggregate_types())
    }

    /// Lets go of the consumer without blocking the async runtime: librdkafka's close leaves
    /// the group and waits for the coordinator, which never answers when the broker is gone.
    fn release(&mut self) {
        if let Some(consumer) = self.consumer.take() {
            std::thread::spawn(move || drop(consumer));
        }
    }

    fn consumer(&self) -> Result<&StreamConsumer, SourceError> {
        self.consumer
            .as_ref()
            .ok_or_else(|| "the Kafka source is not open".into())
    }
}

#[async_trait]
impl EventSource for KafkaSource {
    async fn open(&mut self) -> Result<(), SourceError> {
        let mut all = self.topics.clone();
        all.push(self.settings.dead_letter_topic());
        ensure_topics(&self.settings, &all).await?;
        // A fresh consumer per run: after an error the group is joined anew.
        self.release();
        let consumer: StreamConsumer = self.settings.consumer_config(&self.group).create()?;
        let refs: Vec<&str> = self.topics.iter().map(String::as_str).collect();
        consumer.subscribe(&refs)?;
        self.consumer = Some(consumer);
        self.dead_letters = Some(self.settings.producer_config().create()?);
        tracing::info!(group = %self.group, "kafka source subscribed");
        Ok(())
    }

    async fn next(&mut self) -> Result<Delivery, SourceError> {
        let message = self.consumer()?.recv().await?;
        let traceparent = message.headers().and_then(|headers| {
            use rdkafka::message::Headers;
            headers
                .iter()
                .find(|h| h.key == "traceparent")
                .and_then(|h| h.value)
                .and_then(|v| std::str::from_utf8(v).ok())
                .map(str::to_string)
        });
        Ok(Delivery {
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
        })
    }

    async fn ack(&mut self, delivery: &Delivery) -> Result<(), SourceError> {
        // The offset stored is the next one to read, as librdkafka's own store does.
        let o = &delivery.origin;
        let mut list = rdkafka::TopicPartitionList::new();
        list.add_partition_offset(&o.channel, o.partition, Offset::Offset(o.offset + 1))?;
        self.consumer()?.store_offsets(&list)?;
        Ok(())
    }

    async fn close(&mut self) {
        self.release();
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
        self.release();
    }
}
