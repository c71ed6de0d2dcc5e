//! Kafka for the answers platform: connection settings (any Kafka-compatible cluster), the event
//! envelope and its headers, topic administration, and the relay that publishes the event store
//! in commit-safe order (docs/streaming.md).

mod admin;
mod config;
mod envelope;
mod relay;

pub use admin::ensure_topics;
pub use config::{KafkaSettings, RelaySettings};
pub use envelope::{headers, traceparent, Envelope, EnvelopeMetadata};
pub use relay::{Relay, RelayError, RelayStatus};
