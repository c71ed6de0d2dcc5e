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
    pub event_id: Uuid,
    pub event_type: String,
    pub event_version: String,
    pub tenant_id: String,
    pub aggregate_type: String,
    pub aggregate_id: String,
    pub sequence: i64,
    pub position: i64,
    pub transaction_id: u64,
    pub recorded_at: DateTime<Utc>,
    pub payload: Value,
    pub metadata: EnvelopeMetadata,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EnvelopeMetadata {
    pub actor_id: String,
    pub actor_role: String,
    pub correlation_id: String,
    pub causation_id: Option<String>,
    pub idempotency_key: Option<String>,
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
            },
        }
    }
}
