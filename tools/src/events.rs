//! Events for bulk loads, made from the domain's own types and written through the event store
//! (`PgEventRepository::append_bulk`): no hand-written rows or JSON.
use cqrs_es::persist::SerializedEvent;
use cqrs_es::{Aggregate, DomainEvent};
use domain::conversation::{Conversation, ConversationEvent, Feedback, Reaction};
use domain::knowledge_source::{KnowledgeSource, SourceEvent};
use domain::TenantId;
use event_store::{append_bulk, EventMetadata};
use sqlx::PgPool;
use uuid::Uuid;

/// One event of an aggregate of type `A`, with the metadata the command side would attach.
pub fn serialized<A: Aggregate>(
    aggregate_id: &str,
    sequence: usize,
    event: &A::Event,
    tenant: &TenantId,
    actor: &str,
    correlation_id: String,
) -> anyhow::Result<SerializedEvent> {
    let metadata = EventMetadata {
        traceparent: None,
        tenant_id: tenant.to_string(),
        user_id: actor.to_string(),
        role: "operator".into(),
        correlation_id,
        causation_id: None,
        idempotency_key: None,
        occurred_at: None,
    };
    Ok(SerializedEvent {
        aggregate_type: A::TYPE.to_string(),
        aggregate_id: aggregate_id.to_string(),
        sequence,
        event_type: event.event_type(),
        event_version: event.event_version(),
        payload: serde_json::to_value(event)?,
        metadata: serde_json::to_value(metadata.into_map())?,
    })
}

/// `count` sync requests spread over 100 knowledge sources (what the relay benchmark publishes).
pub async fn append_sync_requests(
    pool: &PgPool,
    tenant: &TenantId,
    count: usize,
) -> anyhow::Result<()> {
    let sources: Vec<String> = (0..100u128)
        .map(|i| tenant.scope(Uuid::from_u128(i + 1)).to_string())
        .collect();
    let mut batch = Vec::with_capacity(5000);
    for g in 0..count {
        let event = SourceEvent::SyncRequested {
            requested_by: "bench".into(),
        };
        batch.push(serialized::<KnowledgeSource>(
            &sources[g % 100],
            g / 100 + 1,
            &event,
            tenant,
            "bench",
            format!("c{g}"),
        )?);
        if batch.len() == 5000 {
            append_bulk(pool, &batch).await?;
            batch.clear();
        }
    }
    append_bulk(pool, &batch).await?;
    Ok(())
}

/// For each of `count` conversations: QuestionAsked, AnswerRecorded, FeedbackGiven,
/// ConversationResolved (what the rebuild benchmark replays).
pub async fn append_conversations(
    pool: &PgPool,
    tenant: &TenantId,
    count: usize,
) -> anyhow::Result<()> {
    let mut batch = Vec::with_capacity(8000);
    for g in 0..count {
        let g128 = g as u128;
        let id = tenant.scope(Uuid::from_u128(0xc0 << 64 | g128)).to_string();
        let question_id = Uuid::from_u128(0xa5 << 64 | g128);
        let answer_id = Uuid::from_u128(0xa9 << 64 | g128);
        let user = format!("user{}", g % 500);
        let events = [
            ConversationEvent::QuestionAsked {
                question_id,
                text: format!("How do I configure feature {g}?"),
                asked_by: user.clone(),
                channel: "web".into(),
                integration_id: None,
                redactions: Default::default(),
            },
            ConversationEvent::AnswerRecorded {
                question_id,
                answer_id,
                text: "Open settings, then features.".into(),
                sources: vec![],
                uncertain: g % 7 == 0,
                latency_ms: 800,
                engine: "bench".into(),
                engine_answer_id: g.to_string(),
                engine_thread_id: None,
                redactions: Default::default(),
                fallback_reason: None,
                first_chunk_ms: None,
            },
            ConversationEvent::FeedbackGiven {
                answer_id,
                user_id: user.clone(),
                feedback: Feedback {
                    reaction: Reaction::Upvote,
                    reasons: vec![],
                    comment: None,
                },
            },
            ConversationEvent::ConversationResolved { by: user.clone() },
        ];
        for (i, event) in events.iter().enumerate() {
            batch.push(serialized::<Conversation>(
                &id,
                i + 1,
                event,
                tenant,
                &user,
                format!("c{g}"),
            )?);
        }
        if batch.len() >= 8000 {
            append_bulk(pool, &batch).await?;
            batch.clear();
        }
    }
    append_bulk(pool, &batch).await?;
    Ok(())
}
