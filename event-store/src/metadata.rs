use std::collections::HashMap;

use chrono::{DateTime, Utc};
use serde_json::Value;

/// What the command side attaches to every event it stores. It travels through cqrs-es as a
/// `HashMap<String, String>` and is promoted to typed columns by the repository.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventMetadata {
    pub tenant_id: String,
    pub user_id: String,
    pub role: String,
    pub correlation_id: String,
    pub causation_id: Option<String>,
    pub idempotency_key: Option<String>,
    /// When the command was accepted, by the command side's clock; the database's `now()` when absent.
    pub occurred_at: Option<DateTime<Utc>>,
}

#[derive(Debug, thiserror::Error)]
pub enum MetadataError {
    #[error("event metadata lacks `{0}`")]
    Missing(&'static str),
    #[error("event metadata is not an object of strings")]
    NotAnObject,
    #[error("event metadata has an unreadable `occurred_at`: {0}")]
    BadTimestamp(String),
}

impl EventMetadata {
    pub const TENANT_ID: &'static str = "tenant_id";
    pub const USER_ID: &'static str = "user_id";
    pub const ROLE: &'static str = "role";
    pub const CORRELATION_ID: &'static str = "correlation_id";
    pub const CAUSATION_ID: &'static str = "causation_id";
    pub const IDEMPOTENCY_KEY: &'static str = "idempotency_key";
    pub const OCCURRED_AT: &'static str = "occurred_at";

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
        map
    }

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
        })
    }
}
