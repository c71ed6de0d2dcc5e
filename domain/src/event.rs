//! Every event of the domain in one type, for the readers of the stream (projections, the audit
//! trail): they match on variants, so renaming an event fails to compile where one depends on it.
use cqrs_es::{Aggregate, DomainEvent};
use serde::Deserialize;

use crate::account::AccountEvent;
use crate::conversation::ConversationEvent;
use crate::knowledge_source::SourceEvent;
use crate::tenant::TenantEvent;

crate::text_enum! {
    /// The kinds of aggregate the store holds; each has its own Kafka topic.
    pub enum AggregateType {
        Tenant = "tenant",
        Conversation = "conversation",
        KnowledgeSource = "knowledge_source",
        Account = "account",
    }
}

/// An event of any aggregate.
#[derive(Debug, Clone, PartialEq)]
pub enum AnyEvent {
    /// An event of a tenant.
    Tenant(TenantEvent),
    /// An event of a conversation.
    Conversation(ConversationEvent),
    /// An event of a knowledge source.
    Source(SourceEvent),
    /// An event of a person's sign-in record.
    Account(AccountEvent),
}

impl AnyEvent {
    /// Decodes a stored payload of an aggregate of `aggregate_type`.
    pub fn decode(
        aggregate_type: AggregateType,
        payload: &serde_json::Value,
    ) -> Result<Self, serde_json::Error> {
        Ok(match aggregate_type {
            AggregateType::Tenant => AnyEvent::Tenant(TenantEvent::deserialize(payload)?),
            AggregateType::Conversation => {
                AnyEvent::Conversation(ConversationEvent::deserialize(payload)?)
            }
            AggregateType::KnowledgeSource => AnyEvent::Source(SourceEvent::deserialize(payload)?),
            AggregateType::Account => AnyEvent::Account(AccountEvent::deserialize(payload)?),
        })
    }

    /// The kind of aggregate the event belongs to.
    pub fn aggregate_type(&self) -> AggregateType {
        match self {
            AnyEvent::Tenant(_) => AggregateType::Tenant,
            AnyEvent::Conversation(_) => AggregateType::Conversation,
            AnyEvent::Source(_) => AggregateType::KnowledgeSource,
            AnyEvent::Account(_) => AggregateType::Account,
        }
    }

    /// The payload as stored: `{"EventType": {...fields}}`.
    pub fn to_payload(&self) -> Result<serde_json::Value, serde_json::Error> {
        match self {
            AnyEvent::Tenant(e) => serde_json::to_value(e),
            AnyEvent::Conversation(e) => serde_json::to_value(e),
            AnyEvent::Source(e) => serde_json::to_value(e),
            AnyEvent::Account(e) => serde_json::to_value(e),
        }
    }

    /// The event type (its variant's name), as stored.
    pub fn event_type(&self) -> String {
        match self {
            AnyEvent::Tenant(e) => e.event_type(),
            AnyEvent::Conversation(e) => e.event_type(),
            AnyEvent::Source(e) => e.event_type(),
            AnyEvent::Account(e) => e.event_type(),
        }
    }
}

impl AggregateType {
    /// The name cqrs-es stores (`Aggregate::TYPE`), which is also the word.
    pub fn of<A: Aggregate>() -> Option<Self> {
        A::TYPE.parse().ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::conversation::Conversation;
    use crate::knowledge_source::KnowledgeSource;
    use crate::tenant::Tenant;

    #[test]
    fn the_words_are_the_aggregates_own_type_names() {
        assert_eq!(AggregateType::of::<Tenant>(), Some(AggregateType::Tenant));
        assert_eq!(
            AggregateType::of::<Conversation>(),
            Some(AggregateType::Conversation)
        );
        assert_eq!(
            AggregateType::of::<KnowledgeSource>(),
            Some(AggregateType::KnowledgeSource)
        );
    }

    #[test]
    fn a_payload_decodes_for_its_aggregate_type_only() {
        let payload = serde_json::json!({"ConversationResolved": {"by": "alice"}});
        let event = AnyEvent::decode(AggregateType::Conversation, &payload).unwrap();
        assert_eq!(event.event_type(), "ConversationResolved");
        assert!(AnyEvent::decode(AggregateType::Tenant, &payload).is_err());
    }
}
