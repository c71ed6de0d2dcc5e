use std::collections::HashMap;

use chrono::{DateTime, Utc};
use serde_json::Value;

/// What the command side attaches to every event it stores. It travels through cqrs-es as a
/// `HashMap<String, String>` and is promoted to typed columns by the repository.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventMetadata {
    /// The tenant the event belongs to.
    pub tenant_id: String,
    /// The user who sent the command.
    pub user_id: String,
    /// The role the user acted in.
    pub role: String,
    /// The request that caused the event (the `X-Request-Id`).
    pub correlation_id: String,
    /// The event or message that caused the command, when one did.
    pub causation_id: Option<String>,
    /// The command's `Idempotency-Key`, when it had one.
    pub idempotency_key: Option<String>,
    /// When the command was accepted, by the command side's clock; the database's `now()` when absent.
    pub occurred_at: Option<DateTime<Utc>>,
    /// The W3C `traceparent` of the span that appended the event, when tracing is on: the relay
    /// and the projections continue that trace (docs/observability.md).
    pub traceparent: Option<String>,
}

/// Why stored metadata could not be read back.
#[derive(Debug, thiserror::Error)]
pub enum MetadataError {
    /// A required key is absent.
    #[error("event metadata lacks `{0}`")]
    Missing(&'static str),
    /// The metadata is not a JSON object.
    #[error("event metadata is not an object of strings")]
    NotAnObject,
    /// `occurred_at` is not an RFC 3339 time.
    #[error("event metadata has an unreadable `occurred_at`: {0}")]
    BadTimestamp(String),
}

impl EventMetadata {
    /// Key of [`Self::tenant_id`] in the map.
    pub const TENANT_ID: &'static str = "tenant_id";
    /// Key of [`Self::user_id`] in the map.
    pub const USER_ID: &'static str = "user_id";
    /// Key of [`Self::role`] in the map.
    pub const ROLE: &'static str = "role";
    /// Key of [`Self::correlation_id`] in the map.
    pub const CORRELATION_ID: &'static str = "correlation_id";
    /// Key of [`Self::causation_id`] in the map.
    pub const CAUSATION_ID: &'static str = "causation_id";
    /// Key of [`Self::idempotency_key`] in the map.
    pub const IDEMPOTENCY_KEY: &'static str = "idempotency_key";
    /// Key of [`Self::occurred_at`] in the map.
    pub const OCCURRED_AT: &'static str = "occurred_at";
    /// Key of [`Self::traceparent`] in the map.
    pub const TRACEPARENT: &'static str = "traceparent";

    /// The map cqrs-es carries to the repository.
    pub fn into_map(self) -> HashMap<String, String> {
        let mut map = HashMap::from([
            (Self::TENANT_ID.to_string(), self.tenant_id),
            (Self::USER_ID.to_string(), self.user_id),
            (Self::ROLE.to_string(), self.role),
            (Self::CORRELATION_ID.to_string(), self.correlation_id),
        ]);
        if let Some(v) = self.causation_id {
            map.insert(Self::CAUSATION_ID.to_string(), v);
        }
        if let Some(v) = self.idempotency_key {
            map.insert(Self::IDEMPOTENCY_KEY.to_string(), v);
        }
        if let Some(v) = self.occurred_at {
            map.insert(Self::OCCURRED_AT.to_string(), v.to_rfc3339());
        }
        if let Some(v) = self.traceparent {
            map.insert(Self::TRACEPARENT.to_string(), v);
        }
        map
    }

    /// Reads the metadata back from its stored JSON.
    pub fn from_value(value: &Value) -> Result<Self, MetadataError> {
        let obj = value.as_object().ok_or(MetadataError::NotAnObject)?;
        let get = |k: &'static str| obj.get(k).and_then(Value::as_str).map(str::to_string);
        let required = |k: &'static str| get(k).ok_or(MetadataError::Missing(k));
        let occurred_at = match get(Self::OCCURRED_AT) {
            None => None,
            Some(s) => Some(
                DateTime::parse_from_rfc3339(&s)
                    .map_err(|e| MetadataError::BadTimestamp(e.to_string()))?
                    .with_timezone(&Utc),
            ),
        };
        Ok(Self {
            tenant_id: required(Self::TENANT_ID)?,
            user_id: required(Self::USER_ID)?,
            role: required(Self::ROLE)?,
            correlation_id: required(Self::CORRELATION_ID)?,
            causation_id: get(Self::CAUSATION_ID),
            idempotency_key: get(Self::IDEMPOTENCY_KEY),
            occurred_at,
            traceparent: get(Self::TRACEPARENT),
        })
    }
}
