//! The audit trail: every event as an entry (who, what, which object, when, correlation,
//! outcome) for compliance reviews (docs/audit.md). [`AuditTrail`] is the pure mapping from
//! event to entry; [`queries`] is what the API reads.
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use domain::account::AccountEvent;
use domain::conversation::ConversationEvent;
use domain::knowledge_source::SourceEvent;
use domain::{AggregateType, AnyEvent, TenantId};
use serde::{Deserialize, Serialize};
use sqlx::PgConnection;
use utoipa::ToSchema;

use crate::event::EventMeta;
use crate::projection::ApplyError;
use crate::read_model::{ReadModel, Refusal};

pub mod queries;

pub use queries::{page, reads, record_read, AuditFilter, AuditRead, CSV_HEADER};

domain::text_enum! {
    /// How the action ended, as far as the event says.
    pub enum AuditOutcome {
        Succeeded = "succeeded",
        Failed = "failed",
        Blocked = "blocked",
    }
}

impl AuditOutcome {
    /// How the event says its action ended.
    pub fn of(event: &AnyEvent) -> Self {
        match event {
            AnyEvent::Conversation(ConversationEvent::AnswerFailed { .. })
            | AnyEvent::Source(SourceEvent::SyncFailed { .. })
            | AnyEvent::Account(AccountEvent::SignInFailed { .. }) => AuditOutcome::Failed,
            AnyEvent::Conversation(ConversationEvent::QuestionBlocked { .. }) => {
                AuditOutcome::Blocked
            }
            _ => AuditOutcome::Succeeded,
        }
    }
}

/// One entry of the audit trail.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema, sqlx::FromRow)]
pub struct AuditEntry {
    /// The event's id.
    pub event_id: uuid::Uuid,
    /// Global position: the cursor of the trail.
    pub position: i64,
    /// When the action was accepted.
    pub recorded_at: DateTime<Utc>,
    /// Who acted.
    pub actor_id: String,
    /// In which role.
    pub actor_role: String,
    /// The event type, e.g. `MemberRoleChanged`.
    pub action: String,
    /// What kind of object the action was on.
    pub object_type: AggregateType,
    /// The tenant id for the tenant, the UUID for a conversation or a source.
    pub object_id: String,
    /// The object's version after this action.
    pub sequence: i64,
    /// The request that caused it.
    pub correlation_id: String,
    /// What caused the command, if anything did.
    pub causation_id: Option<String>,
    /// How the action ended.
    pub outcome: AuditOutcome,
    /// The event's fields.
    #[schema(value_type = Object)]
    pub details: serde_json::Value,
}

/// The entries of one object not yet written, and the object version they reach.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct AuditHead {
    /// The object version written so far.
    pub version: i64,
    /// Entries folded but not yet written.
    pub pending: Vec<AuditEntry>,
}

/// Which object an entry is about: (tenant, type, object id).
pub type ObjectKey = (TenantId, AggregateType, String);

/// The audit trail read model.
pub struct AuditTrail;

#[async_trait]
impl ReadModel for AuditTrail {
    const NAME: &'static str = "audit";
    const AGGREGATE_TYPES: &'static [AggregateType] = AggregateType::ALL;
    const TABLES: &'static [&'static str] = &["rm_audit"];
    type Event = AnyEvent;
    type State = AuditHead;
    type Key = ObjectKey;

    fn select(event: &AnyEvent) -> Option<&AnyEvent> {
        Some(event)
    }

    fn key(meta: &EventMeta) -> Result<ObjectKey, ApplyError> {
        let object_id = match meta.aggregate_type {
            AggregateType::Tenant => meta.aggregate_id.clone(),
            _ => meta.scoped()?.id.to_string(),
        };
        Ok((meta.tenant.clone(), meta.aggregate_type, object_id))
    }

    fn version(state: &AuditHead) -> i64 {
        state.version
    }

    fn fold(
        state: Option<AuditHead>,
        meta: &EventMeta,
        event: &AnyEvent,
    ) -> Result<AuditHead, Refusal> {
        let mut head = state.unwrap_or_default();
        // The stored payload's single key is the event type; the entry keeps what is inside.
        let payload = event
            .to_payload()
            .map_err(|e| Refusal(format!("cannot describe the event: {e}")))?;
        let details = payload
            .as_object()
            .and_then(|o| o.values().next().cloned())
            .unwrap_or(payload);
        let (_, object_type, object_id) = Self::key(meta).map_err(|e| Refusal(e.report()))?;
        head.pending.push(AuditEntry {
            event_id: meta.event_id,
            position: meta.position,
            recorded_at: meta.recorded_at,
            actor_id: meta.actor_id.clone(),
            actor_role: meta.actor_role.clone(),
            action: event.event_type(),
            object_type,
            object_id,
            sequence: meta.sequence,
            correlation_id: meta.correlation_id.clone(),
            causation_id: meta.causation_id.clone(),
            outcome: AuditOutcome::of(event),
            details,
        });
        head.version = meta.sequence;
        Ok(head)
    }

    async fn load(
        conn: &mut PgConnection,
        key: &ObjectKey,
    ) -> Result<Option<AuditHead>, ApplyError> {
        let version = sqlx::query_scalar!(
            "SELECT max(sequence) FROM rm_audit WHERE tenant_id = $1 AND object_type = $2 AND object_id = $3",
            key.0.as_str(),
            key.1.as_str(),
            key.2,
        )
        .fetch_one(&mut *conn)
        .await?;
        Ok(version.map(|version| AuditHead {
            version,
            pending: Vec::new(),
        }))
    }

    async fn save(
        conn: &mut PgConnection,
        key: &ObjectKey,
        head: &AuditHead,
    ) -> Result<(), ApplyError> {
        for e in &head.pending {
            sqlx::query!(
                "INSERT INTO rm_audit (event_id, tenant_id, position, recorded_at, actor_id, actor_role, action,
                   object_type, object_id, sequence, correlation_id, causation_id, outcome, details)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)
                 ON CONFLICT (event_id) DO NOTHING",
                e.event_id,
                key.0.as_str(),
                e.position,
                e.recorded_at,
                e.actor_id,
                e.actor_role,
                e.action,
                e.object_type.as_str(),
                e.object_id,
                e.sequence,
                e.correlation_id,
                e.causation_id,
                e.outcome.as_str(),
                e.details,
            )
            .execute(&mut *conn)
            .await?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::testing::event;
    use crate::read_model::fold_all;

    #[test]
    fn every_event_becomes_an_entry_with_its_outcome_and_details() {
        const ID: &str = "acme/0191e4c2-0000-7000-8000-000000000004";
        let failed = ConversationEvent::AnswerFailed {
            question_id: uuid::Uuid::from_u128(1),
            reason: "engine down".into(),
            retryable: true,
        };
        let head = fold_all::<AuditTrail>(&[
            event(
                ID,
                1,
                0,
                AnyEvent::Conversation(ConversationEvent::ConversationResolved {
                    by: "bob".into(),
                }),
            ),
            event(ID, 2, 1, AnyEvent::Conversation(failed)),
        ])
        .unwrap()
        .unwrap();
        assert_eq!(head.version, 2);
        let outcomes: Vec<AuditOutcome> = head.pending.iter().map(|e| e.outcome).collect();
        assert_eq!(outcomes, [AuditOutcome::Succeeded, AuditOutcome::Failed]);
        let entry = &head.pending[1];
        assert_eq!(entry.action, "AnswerFailed");
        assert_eq!(entry.object_type, AggregateType::Conversation);
        assert_eq!(entry.object_id, "0191e4c2-0000-7000-8000-000000000004");
        assert_eq!(entry.details["reason"], "engine down");
        assert_eq!(entry.actor_id, "alice");
    }
}
