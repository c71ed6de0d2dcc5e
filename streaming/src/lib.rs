//! Kafka for the answers platform: connection settings (any Kafka-compatible cluster), the event
//! envelope and its headers, topic administration, and the relay that publishes the event store
//! in commit-safe order (docs/streaming.md).

mod admin;
mod config;
mod envelope;
mod kafka_source;
mod partition_owners;
mod relay;

pub use admin::{ensure_topics, reachable};
pub use config::{KafkaSettings, RelaySettings};
pub use envelope::{headers, traceparent};
pub use event_store::{Envelope, EnvelopeMetadata};
pub use kafka_source::KafkaSource;
pub use partition_owners::{
    advance_offset, partition_holders, stored_offset, Ownership, OwnershipError, PartitionOwners,
    TopicPartition,
};
pub use relay::{Relay, RelayError, RelayStatus};
