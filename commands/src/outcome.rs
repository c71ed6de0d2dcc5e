use domain::conversation::ConversationEvent;
use domain::engine::CitedSource;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

/// What a command answers: the aggregate it changed and the version it reached.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct CommandOutcome {
    /// The aggregate's id (a UUID, or the tenant id for tenant commands).
    pub id: String,
    /// The aggregate's version (its last event's sequence) after the command.
    pub version: u64,
    /// For questions: what became of the question.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub answer: Option<AnswerOutcome>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum AnswerStatus {
    Answered,
    Failed,
    Blocked,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct AnswerOutcome {
    pub question_id: Uuid,
    pub status: AnswerStatus,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub answer_id: Option<Uuid>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
    #[serde(skip_serializing_if = "Vec::is_empty", default)]
    #[schema(value_type = Vec<CitedSourceDto>)]
    pub sources: Vec<CitedSource>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub uncertain: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub latency_ms: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub engine: Option<String>,
    /// Why the engine failed, or which guardrail blocked the question.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retryable: Option<bool>,
}

/// A source the answer cites.
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct CitedSourceDto {
    url: String,
    title: Option<String>,
}

/// Builds the outcome of a command from the events it stored. Both the first answer and every
/// idempotent replay go through here, so they cannot differ.
pub(crate) trait DescribeOutcome: cqrs_es::Aggregate {
    fn answer_outcome(_events: &[Self::Event]) -> Option<AnswerOutcome> {
        None
    }
}

impl DescribeOutcome for domain::tenant::Tenant {}
impl DescribeOutcome for domain::knowledge_source::KnowledgeSource {}

impl DescribeOutcome for domain::conversation::Conversation {
    fn answer_outcome(events: &[ConversationEvent]) -> Option<AnswerOutcome> {
        events.iter().find_map(|event| {
            let empty = |question_id, status| AnswerOutcome {
                question_id,
                status,
                answer_id: None,
                text: None,
                sources: vec![],
                uncertain: None,
                latency_ms: None,
                engine: None,
                reason: None,
                retryable: None,
            };
            match event {
                ConversationEvent::AnswerRecorded {
                    question_id,
                    answer_id,
                    text,
                    sources,
                    uncertain,
                    latency_ms,
                    engine,
                    ..
                } => Some(AnswerOutcome {
                    answer_id: Some(*answer_id),
                    text: Some(text.clone()),
                    sources: sources.clone(),
                    uncertain: Some(*uncertain),
                    latency_ms: Some(*latency_ms),
                    engine: Some(engine.clone()),
                    ..empty(*question_id, AnswerStatus::Answered)
                }),
                ConversationEvent::AnswerFailed {
                    question_id,
                    reason,
                    retryable,
                } => Some(AnswerOutcome {
                    reason: Some(reason.clone()),
                    retryable: Some(*retryable),
                    ..empty(*question_id, AnswerStatus::Failed)
                }),
                ConversationEvent::QuestionBlocked {
                    question_id, rule, ..
                } => Some(AnswerOutcome {
                    reason: Some(rule.clone()),
                    ..empty(*question_id, AnswerStatus::Blocked)
                }),
                _ => None,
            }
        })
    }
}
