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

    /// One statement for a rebuild's batch: the last sequence of every object it touches.
    async fn load_many(
        conn: &mut PgConnection,
        keys: &[ObjectKey],
    ) -> Result<Vec<(ObjectKey, AuditHead)>, ApplyError> {
        let tenants: Vec<String> = keys.iter().map(|k| k.0.as_str().to_string()).collect();
        let types: Vec<String> = keys.iter().map(|k| k.1.as_str().to_string()).collect();
        let ids: Vec<String> = keys.iter().map(|k| k.2.clone()).collect();
        let rows = sqlx::query!(
            r#"SELECT k.tenant_id AS "tenant_id!", k.object_type AS "object_type!",
                 k.object_id AS "object_id!", max(r.sequence) AS "version!"
               FROM UNNEST($1::text[], $2::text[], $3::text[]) AS k(tenant_id, object_type, object_id)
               JOIN rm_audit r ON r.tenant_id = k.tenant_id AND r.object_type = k.object_type
                 AND r.object_id = k.object_id
               GROUP BY k.tenant_id, k.object_type, k.object_id"#,
            &tenants,
            &types,
            &ids,
        )
        .fetch_all(&mut *conn)
        .await?;
        // Back to the keys asked for (no parsing of what was stored).
        let asked: std::collections::HashMap<(&str, &str, &str), &ObjectKey> = keys
            .iter()
            .map(|k| ((k.0.as_str(), k.1.as_str(), k.2.as_str()), k))
            .collect();
        Ok(rows
            .iter()
            .filter_map(|r| {
                let key = asked.get(&(
                    r.tenant_id.as_str(),
                    r.object_type.as_str(),
                    r.object_id.as_str(),
                ))?;
                Some((
                    (*key).clone(),
                    AuditHead {
                        version: r.version,
                        pending: Vec::new(),
                    },
                ))
            })
            .collect())
    }

    /// One statement for a rebuild's batch: every new entry of every object.
    async fn save_many(
        conn: &mut PgConnection,
        parts: &[(&ObjectKey, &AuditHead)],
    ) -> Result<(), ApplyError> {
        let entries: Vec<(&ObjectKey, &AuditEntry)> = parts
            .iter()
            .flat_map(|(key, head)| head.pending.iter().map(move |e| (*key, e)))
            .collect();
        if entries.is_empty() {
            return Ok(());
        }
        let column = |f: &dyn Fn(&ObjectKey, &AuditEntry) -> String| -> Vec<String> {
            entries.iter().map(|(k, e)| f(k, e)).collect()
        };
        let tenants = column(&|k, _| k.0.as_str().to_string());
        let actors = column(&|_, e| e.actor_id.clone());
        let roles = column(&|_, e| e.actor_role.clone());
        let actions = column(&|_, e| e.action.clone());
        let types = column(&|_, e| e.object_type.as_str().to_string());
        let ids = column(&|_, e| e.object_id.clone());
        let correlations = column(&|_, e| e.correlation_id.clone());
        let outcomes = column(&|_, e| e.outcome.as_str().to_string());
        let event_ids: Vec<uuid::Uuid> = entries.iter().map(|(_, e)| e.event_id).collect();
        let positions: Vec<i64> = entries.iter().map(|(_, e)| e.position).collect();
        let recorded: Vec<DateTime<Utc>> = entries.iter().map(|(_, e)| e.recorded_at).collect();
        let sequences: Vec<i64> = entries.iter().map(|(_, e)| e.sequence).collect();
        let causations: Vec<Option<String>> = entries
            .iter()
            .map(|(_, e)| e.causation_id.clone())
            .collect();
        let details: Vec<serde_json::Value> =
            entries.iter().map(|(_, e)| e.details.clone()).collect();
        sqlx::query!(
            "INSERT INTO rm_audit (event_id, tenant_id, position, recorded_at, actor_id, actor_role, action,
               object_type, object_id, sequence, correlation_id, causation_id, outcome, details)
             SELECT * FROM UNNEST($1::uuid[], $2::text[], $3::int8[], $4::timestamptz[], $5::text[],
               $6::text[], $7::text[], $8::text[], $9::text[], $10::int8[], $11::text[], $12::text[],
               $13::text[], $14::jsonb[])
             ON CONFLICT (event_id) DO NOTHING",
            &event_ids,
            &tenants,
            &positions,
            &recorded,
            &actors,
            &roles,
            &actions,
            &types,
            &ids,
            &sequences,
            &correlations,
            &causations as &[Option<String>],
            &outcomes,
            &details,
        )
        .execute(&mut *conn)
        .await?;
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
