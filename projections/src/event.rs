//! The event a projection receives: decoded once, by the runtime, from the wire format.
use chrono::{DateTime, Utc};
use domain::{AggregateType, AnyEvent, ScopedId, TenantId};
use event_store::Envelope;
use uuid::Uuid;

use crate::projection::ApplyError;

/// What the store knows of an event besides its payload.
#[derive(Debug, Clone, PartialEq)]
pub struct EventMeta {
    /// The event's id.
    pub event_id: Uuid,
    /// Global position in the store.
    pub position: i64,
    /// The tenant it belongs to.
    pub tenant: TenantId,
    /// The kind of aggregate.
    pub aggregate_type: AggregateType,
    /// As stored: the tenant id for a tenant, `tenant/uuid` for the others.
    pub aggregate_id: String,
    /// The aggregate's version after this event (1 for its first).
    pub sequence: i64,
    /// When the command was accepted.
    pub recorded_at: DateTime<Utc>,
    /// The version of the payload's shape.
    pub event_version: String,
    /// Who sent the command.
    pub actor_id: String,
    /// In which role.
    pub actor_role: String,
    /// The request that caused it.
    pub correlation_id: String,
    /// What caused the command, if anything did.
    pub causation_id: Option<String>,
}

impl EventMeta {
    /// The aggregate id as a tenant-scoped id (conversations, sources), or a poison event.
    pub fn scoped(&self) -> Result<ScopedId, ApplyError> {
        let scoped =
            ScopedId::parse(&self.aggregate_id).map_err(|e| ApplyError::Poison(e.to_string()))?;
        if scoped.tenant != self.tenant {
            return Err(ApplyError::Poison(format!(
                "`{}` is not an aggregate of tenant `{}`",
                self.aggregate_id, self.tenant
            )));
        }
        Ok(scoped)
    }
}

/// One decoded event with its metadata.
#[derive(Debug, Clone, PartialEq)]
pub struct Projected {
    /// What the store knows of the event.
    pub meta: EventMeta,
    /// The event.
    pub event: AnyEvent,
}

impl Projected {
    /// Decodes the wire format; what cannot be decoded is a poison event.
    pub fn decode(envelope: &Envelope) -> Result<Self, ApplyError> {
        let poison = |what: String| ApplyError::Poison(what);
        let aggregate_type: AggregateType = envelope
            .aggregate_type
            .parse()
            .map_err(|e: domain::text_enum::UnknownWord| poison(e.to_string()))?;
        let tenant = TenantId::parse(&envelope.tenant_id).map_err(|e| poison(e.to_string()))?;
        let event = AnyEvent::decode(aggregate_type, &envelope.payload)
            .map_err(|e| poison(format!("undecodable {}: {e}", envelope.event_type)))?;
        if event.event_type() != envelope.event_type {
            return Err(poison(format!(
                "the payload is a {}, the envelope says {}",
                event.event_type(),
                envelope.event_type
            )));
        }
        Ok(Self {
            meta: EventMeta {
                event_id: envelope.event_id,
                position: envelope.position,
                tenant,
                aggregate_type,
                aggregate_id: envelope.aggregate_id.clone(),
                sequence: envelope.sequence,
                recorded_at: envelope.recorded_at,
                event_version: envelope.event_version.clone(),
                actor_id: envelope.metadata.actor_id.clone(),
                actor_role: envelope.metadata.actor_role.clone(),
                correlation_id: envelope.metadata.correlation_id.clone(),
                causation_id: envelope.metadata.causation_id.clone(),
            },
            event,
        })
    }

    /// Decodes the serialised wire format as a source delivers it.
    pub fn decode_bytes(bytes: &[u8]) -> Result<Self, ApplyError> {
        let envelope: Envelope = serde_json::from_slice(bytes)
            .map_err(|e| ApplyError::Poison(format!("undecodable envelope: {e}")))?;
        Self::decode(&envelope)
    }
}

#[cfg(test)]
pub(crate) mod testing {
    //! Events for the folds' unit tests, without a store or a broker.
    use super::*;

    /// An event of `aggregate_id` at `sequence`, recorded `minute` minutes after a fixed start.
    pub fn event(aggregate_id: &str, sequence: i64, minute: i64, event: AnyEvent) -> Projected {
        let tenant = aggregate_id.split('/').next().unwrap_or(aggregate_id);
        Projected {
            meta: EventMeta {
                event_id: Uuid::from_u128((sequence as u128) << 64 | minute as u128),
                position: sequence * 10,
                tenant: TenantId::parse(tenant).unwrap(),
                aggregate_type: event.aggregate_type(),
                aggregate_id: aggregate_id.to_string(),
                sequence,
                recorded_at: DateTime::from_timestamp(1_790_000_000 + minute * 60, 0).unwrap(),
                event_version: "1.0".into(),
                actor_id: "alice".into(),
                actor_role: "admin".into(),
                correlation_id: format!("c-{sequence}"),
                causation_id: None,
            },
            event,
        }
    }
}
