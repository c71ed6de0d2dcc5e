//! The wire format of one stored event: what the relay publishes and what readers decode.
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use uuid::Uuid;

use crate::StoredEvent;

/// What travels on the topics: one stored event with everything a consumer needs to apply it,
/// de-duplicate it (`event_id`, or `aggregate_id` + `sequence`) and audit it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Envelope {
    /// The event's own id (UUIDv7), unique in the store.
    pub event_id: Uuid,
    /// The event's type: its variant name, e.g. `QuestionAsked`.
    pub event_type: String,
    /// The version of the payload's shape (upcasters key on it).
    pub event_version: String,
    /// The tenant the event belongs to.
    pub tenant_id: String,
    /// The kind of aggregate: `tenant`, `conversation` or `knowledge_source`.
    pub aggregate_type: String,
    /// The aggregate's id: the tenant id for a tenant, `tenant/uuid` for the others.
    pub aggregate_id: String,
    /// The aggregate's version after this event (1 for its first).
    pub sequence: i64,
    /// Global position in the store, handed out at insert time.
    pub position: i64,
    /// The inserting transaction (`xid8`); with `position` it orders commits.
    pub transaction_id: u64,
    /// When the command was accepted.
    pub recorded_at: DateTime<Utc>,
    /// The event as JSON: `{"EventType": {...fields}}`.
    pub payload: Value,
    /// The command's metadata as stored beside the event.
    pub metadata: EnvelopeMetadata,
}

/// Who sent the command that produced the event, and in which request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EnvelopeMetadata {
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
    /// The W3C trace context of the append, when tracing was on (docs/observability.md).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub traceparent: Option<String>,
}

impl From<&StoredEvent> for Envelope {
    fn from(e: &StoredEvent) -> Self {
        Self {
            event_id: e.event_id,
            event_type: e.event_type.clone(),
            event_version: e.event_version.clone(),
            tenant_id: e.tenant_id.clone(),
            aggregate_type: e.aggregate_type.clone(),
            aggregate_id: e.aggregate_id.clone(),
            sequence: e.sequence,
            position: e.position,
            transaction_id: e.transaction_id,
            recorded_at: e.recorded_at,
            payload: e.payload.clone(),
            metadata: EnvelopeMetadata {
                actor_id: e.actor_id.clone(),
                actor_role: e.actor_role.clone(),
                correlation_id: e.correlation_id.clone(),
                causation_id: e.causation_id.clone(),
                idempotency_key: e.idempotency_key.clone(),
                traceparent: e
                    .metadata
                    .get(crate::EventMetadata::TRACEPARENT)
                    .and_then(serde_json::Value::as_str)
                    .map(str::to_string),
            },
        }
    }
}
