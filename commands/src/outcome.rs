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
    /// The engine is still answering (a replayed request while the first runs, or one whose
    /// answer was interrupted and is awaiting the sweeper).
    Pending,
    Answered,
    Failed,
    Blocked,
    /// An answer arrived but the tenant's output guardrails kept it from the user.
    Withheld,
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
    /// The answer outcome and the sequence at which it settled, from the events from the
    /// command's first event on (events of later commands may follow; they are ignored).
    fn answer_outcome(_events: &[(u64, Self::Event)]) -> Option<(AnswerOutcome, u64)> {
        None
    }
}

impl DescribeOutcome for domain::tenant::Tenant {}
impl DescribeOutcome for domain::account::Account {}
impl DescribeOutcome for domain::knowledge_source::KnowledgeSource {}

impl DescribeOutcome for domain::conversation::Conversation {
    fn answer_outcome(events: &[(u64, ConversationEvent)]) -> Option<(AnswerOutcome, u64)> {
        let (asked_at, question) = events.iter().find_map(|(seq, e)| match e {
            ConversationEvent::QuestionAsked { question_id, .. } => Some((*seq, *question_id)),
            _ => None,
        })?;
        let empty = |status| AnswerOutcome {
            question_id: question,
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
        let settled = events.iter().find_map(|(seq, event)| {
            let outcome = match event {
                ConversationEvent::AnswerRecorded {
                    question_id,
                    answer_id,
                    text,
                    sources,
                    uncertain,
                    latency_ms,
                    engine,
                    ..
                } if *question_id == question => AnswerOutcome {
                    answer_id: Some(*answer_id),
                    text: Some(text.clone()),
                    sources: sources.clone(),
                    uncertain: Some(*uncertain),
                    latency_ms: Some(*latency_ms),
                    engine: Some(engine.clone()),
                    ..empty(AnswerStatus::Answered)
                },
                ConversationEvent::AnswerFailed {
                    question_id,
                    reason,
                    retryable,
                } if *question_id == question => AnswerOutcome {
                    reason: Some(reason.clone()),
                    retryable: Some(*retryable),
                    ..empty(AnswerStatus::Failed)
                },
                ConversationEvent::QuestionBlocked {
                    question_id, rule, ..
                } if *question_id == question => AnswerOutcome {
                    reason: Some(rule.clone()),
                    ..empty(AnswerStatus::Blocked)
                },
                ConversationEvent::AnswerWithheld {
                    question_id,
                    rule,
                    engine,
                    latency_ms,
                } if *question_id == question => AnswerOutcome {
                    reason: Some(rule.to_string()),
                    engine: Some(engine.clone()),
                    latency_ms: Some(*latency_ms),
                    ..empty(AnswerStatus::Withheld)
                },
                _ => return None,
            };
            Some((outcome, *seq))
        });
        Some(settled.unwrap_or_else(|| (empty(AnswerStatus::Pending), asked_at)))
    }
}
