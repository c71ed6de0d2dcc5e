//! The Kafka side of the envelope: its headers (the envelope itself is the event store's wire
//! format, `event_store::Envelope`, so that readers need no Kafka types).
use event_store::Envelope;
use rdkafka::message::{Header, OwnedHeaders};
use sha2::{Digest, Sha256};
use uuid::Uuid;

/// When tracing is off (no trace context stored with the event): a W3C `traceparent` that
/// still puts every event of one request into one trace: the trace id is derived from the
/// correlation id, the span id from the event id.
pub fn traceparent(correlation_id: &str, event_id: Uuid) -> String {
    let trace = hex::encode(&Sha256::digest(correlation_id.as_bytes())[..16]);
    let span = hex::encode(&event_id.as_bytes()[8..]);
    format!("00-{trace}-{span}-01")
}

/// Kafka headers: routing and tracing facts a consumer can read without parsing the value,
/// named after the CloudEvents Kafka binding where one exists (docs/streaming.md). `trace` is
/// the publishing span's `traceparent`, when tracing is on.
pub fn headers(envelope: &Envelope, trace: Option<String>) -> OwnedHeaders {
    let event_id = envelope.event_id.to_string();
    let time = envelope.recorded_at.to_rfc3339();
    let source = format!(
        "/tenants/{}/{}",
        envelope.tenant_id, envelope.aggregate_type
    );
    let trace =
        trace.unwrap_or_else(|| traceparent(&envelope.metadata.correlation_id, envelope.event_id));
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
