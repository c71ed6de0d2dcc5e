use chrono::{DateTime, Utc};
use event_store::StoredEvent;
use rdkafka::message::{Header, OwnedHeaders};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha256};
use uuid::Uuid;

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

/// A W3C `traceparent` that puts every event of one request into one trace: the trace id is
/// derived from the correlation id, the span id from the event id.
pub fn traceparent(correlation_id: &str, event_id: Uuid) -> String {
    let trace = hex::encode(&Sha256::digest(correlation_id.as_bytes())[..16]);
    let span = hex::encode(&event_id.as_bytes()[8..]);
    format!("00-{trace}-{span}-01")
}

/// Kafka headers: routing and tracing facts a consumer can read without parsing the value,
/// named after the CloudEvents Kafka binding where one exists (docs/streaming.md).
pub fn headers(envelope: &Envelope) -> OwnedHeaders {
    let event_id = envelope.event_id.to_string();
    let time = envelope.recorded_at.to_rfc3339();
    let source = format!(
        "/tenants/{}/{}",
        envelope.tenant_id, envelope.aggregate_type
    );
    let trace = traceparent(&envelope.metadata.correlation_id, envelope.event_id);
    let pairs: [(&str, &str); 10] = [
        ("ce_specversion", "1.0"),
        ("ce_id", &event_id),
        ("ce_type", &envelope.event_type),
        ("ce_source", &source),
        ("ce_time", &time),
        ("event_id", &event_id),
        ("event_version", &envelope.event_version),
        ("tenant_id", &envelope.tenant_id),
        ("correlation_id", &envelope.metadata.correlation_id),
        ("traceparent", &trace),
    ];
    pairs
        .iter()
        .fold(OwnedHeaders::new(), |headers, (key, value)| {
            headers.insert(Header {
                key,
                value: Some(value.as_bytes()),
            })
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn traceparent_is_w3c_shaped_and_shared_by_one_request() {
        let a = traceparent("req-1", Uuid::from_u128(1));
        let b = traceparent("req-1", Uuid::from_u128(2));
        let parts: Vec<&str> = a.split('-').collect();
        assert_eq!(parts.len(), 4);
        assert_eq!(
            (parts[0], parts[1].len(), parts[2].len(), parts[3]),
            ("00", 32, 16, "01")
        );
        assert_eq!(a[..35], b[..35], "same trace id");
        assert_ne!(a, b, "different span ids");
    }
}
